"""The one shared weights file: canonical ``dict[str, np.ndarray]`` in safetensors format."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from compare.spec import PARAM_SHAPES

WEIGHTS_DTYPE = np.float32


class WeightsError(ValueError):
    """The weights file or dict does not match the model's canonical parameters."""


def init_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """PyTorch's default init right after ``torch.manual_seed(seed)``; seed 0 gives the seed script's weights."""
    import torch

    from torch_impl.model import SimpleCNN

    torch.manual_seed(seed)
    model = SimpleCNN()
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def validate_weights(weights: dict[str, np.ndarray], source: str = "weights") -> dict[str, np.ndarray]:
    """Every key present, no extra key, every shape and dtype canonical; errors name key, expected, found."""
    if not isinstance(weights, dict):
        raise WeightsError(f"{source}: expected a dict of arrays, got {type(weights).__name__}")
    missing = [k for k in PARAM_SHAPES if k not in weights]
    extra = [k for k in weights if k not in PARAM_SHAPES]
    if missing:
        raise WeightsError(f"{source}: missing key(s) {missing}; expected keys {list(PARAM_SHAPES)}")
    if extra:
        raise WeightsError(f"{source}: unexpected key(s) {extra}; expected keys {list(PARAM_SHAPES)}")
    for key, shape in PARAM_SHAPES.items():
        arr = weights[key]
        if not isinstance(arr, np.ndarray):
            raise WeightsError(f"{source}: {key}: expected numpy array, found {type(arr).__name__}")
        if arr.shape != shape:
            raise WeightsError(f"{source}: {key}: expected shape {shape}, found {arr.shape}")
        if arr.dtype != WEIGHTS_DTYPE:
            raise WeightsError(f"{source}: {key}: expected dtype float32, found {arr.dtype}")
        if not np.isfinite(arr).all():
            raise WeightsError(f"{source}: {key}: contains NaN or inf")
    return weights


def save_weights(path: str | os.PathLike, weights: dict[str, np.ndarray]) -> Path:
    """Validate, then write atomically (temp file + rename) so a crash never leaves a half-written file."""
    from safetensors.numpy import save_file

    path = Path(path)
    validate_weights(weights)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: np.ascontiguousarray(weights[k]) for k in PARAM_SHAPES}, str(tmp))
    os.replace(tmp, path)
    return path


def load_weights(path: str | os.PathLike) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        weights = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise WeightsError(f"weights file {path} is not a readable safetensors file: {err}") from err
    return validate_weights(weights, source=str(path))
