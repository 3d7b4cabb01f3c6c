"""The one tolerance helper of the test suite, and the tolerances it is used with (relative, per parameter).

An error is ``max |got - ref|`` over one parameter's per-sample gradients, divided by the reference's
max |value| for that parameter (the scale of the quantity, so tiny entries do not need an absolute floor).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from compare.frameworks import per_sample_module
from compare.spec import PARAM_NAMES, make_batch
from compare.weights import init_weights

BATCH_SIZE = 8  # small enough that the per-example loop references stay fast
BATCH_SEED = 1

# Same framework, two methods (e.g. vmap vs loop). float64 (u = 1.1e-16): only the summation order differs,
# measured <= 8e-15 on the B=8 seed-1 batch; 1e-12 leaves 100x room. float32 (u = 6e-8): measured 5e-7 (torch)
# and 4e-6 (JAX's loop vs its vmap); 1e-4 is 25x the worst, and still 1e3x below what a layout or sample-mixing
# bug gives (O(1)). Batches are fixed and seeded: a float32 ReLU/max-pool decision flipped by rounding (see
# FINDINGS.md, ~0.5% of samples) would exceed it, and the fixed batches used here have none.
RTOL: dict[str, float] = {"float64": 1e-12, "float32": 1e-4}
# torch vs JAX in float64: different kernels and summation orders, measured ~1e-15; bound 1e-10.
CROSS_RTOL_FLOAT64 = 1e-10


def relative_errors(got: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> dict[str, float]:
    """{name: max |got - ref| / max |ref|} after checking both carry exactly the canonical names and shapes."""
    assert set(got) == set(ref) == set(PARAM_NAMES), f"keys {sorted(got)} vs {sorted(ref)}"
    out = {}
    for name in PARAM_NAMES:
        g, r = np.asarray(got[name], np.float64), np.asarray(ref[name], np.float64)
        assert g.shape == r.shape, f"{name}: shape {g.shape} != reference {r.shape}"
        scale = np.abs(r).max()
        assert scale > 0, f"{name}: reference is all zeros, a relative error would be meaningless"
        out[name] = float(np.abs(g - r).max() / scale)
    return out


def assert_grads_close(got: dict[str, np.ndarray], ref: dict[str, np.ndarray], rtol: float, what: str = "") -> None:
    """Every parameter within ``rtol`` of ``ref`` relative to ref's max |value|; the message lists the offenders."""
    errors = relative_errors(got, ref)
    bad = {k: f"{v:.2e}" for k, v in errors.items() if not v <= rtol}  # `not <=` also catches NaN
    assert not bad, f"{what}: relative error above {rtol:.0e} for {bad}"


@lru_cache(maxsize=None)
def seed_weights() -> dict[str, np.ndarray]:
    """The seed's weights (PyTorch default init after ``torch.manual_seed(0)``), made once per session."""
    return init_weights(0)


@lru_cache(maxsize=None)
def cached_grads(
    framework: str, method: str, loss: str, dtype: str, batch_size: int = BATCH_SIZE, seed: int = BATCH_SEED
) -> dict[str, np.ndarray]:
    """Per-sample gradients of the seed weights on ``make_batch(batch_size, seed)``, computed once per session.

    Several tests compare against the same ``loop`` reference; caching keeps the suite fast. The arrays are
    made read-only so that no test can alter what another test compares against.
    """
    x, y = make_batch(batch_size, seed=seed)
    grads = per_sample_module(framework).per_sample_grads(
        seed_weights(), x, y, method=method, loss=loss, dtype=dtype, device="cpu"
    )
    for arr in grads.values():
        arr.setflags(write=False)
    return grads


def methods(framework: str, *, exclude: tuple[str, ...] = ()) -> list[str]:
    """The framework's registered methods, read at collection time so methods added later are tested too."""
    return [m for m in per_sample_module(framework).METHODS if m not in exclude]
