"""The shared weights file: ``init_weights`` (PyTorch's default init, through the torch side) over the neutral
file I/O of ``contract.weights`` (re-exported here)."""
from __future__ import annotations

import numpy as np

from contract.spec import DEFAULT_MODEL, Workload, check_model
from contract.weights import (  # noqa: F401 - re-exported: the weights file's public interface
    WEIGHTS_DTYPE, WeightsError, load_weights, save_weights, validate_weights)


def init_weights(seed: int = 0, model: str | Workload = DEFAULT_MODEL) -> dict[str, np.ndarray]:
    """PyTorch's default init right after ``torch.manual_seed(seed)``; seed 0 gives the seed script's weights."""
    from compare.frameworks import side

    return side("torch").init_weights(seed, check_model(model))
