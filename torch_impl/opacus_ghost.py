"""The ghost-clipping peer's historical home (``compare.benchmark.targets`` imports the step from here by this
module and name): everything lives in ``torch_impl.opacus_step``, beside the hooks-materialise peer."""
from torch_impl.opacus_step import (  # noqa: F401  (re-exports)
    OPACUS_AVAILABLE,
    OPACUS_GHOST_AVAILABLE,
    DPStepFn,
    Params,
    make_opacus_ghost_step,
    make_opacus_hooks_step,
)
