"""The one shared weights file: canonical ``dict[str, np.ndarray]`` in safetensors format."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from compare.spec import PARAM_SHAPES

WEIGHTS_DTYPE = np.float32
_SAFETENSORS_DTYPE = "F32"  # how safetensors' header spells WEIGHTS_DTYPE


class WeightsError(ValueError):
    """The weights file or dict does not match the model's canonical parameters."""


def init_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """PyTorch's default init right after ``torch.manual_seed(seed)``; seed 0 gives the seed script's weights."""
    import torch

    from torch_impl.model import SimpleCNN

    torch.manual_seed(seed)
    model = SimpleCNN()
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def _check_keys(found: list[str], source: str) -> None:
    missing = [k for k in PARAM_SHAPES if k not in found]
    extra = [k for k in found if k not in PARAM_SHAPES]
    if missing or extra:
        raise WeightsError(
            f"{source}: missing key(s) {missing}, unexpected key(s) {extra}; "
            f"expected keys {list(PARAM_SHAPES)}, found keys {list(found)}"
        )


def _check_shape(key: str, found: tuple[int, ...], source: str) -> None:
    if found != PARAM_SHAPES[key]:
        raise WeightsError(f"{source}: {key}: expected shape {PARAM_SHAPES[key]}, found {found}")


def validate_weights(weights: dict[str, np.ndarray], source: str = "weights") -> dict[str, np.ndarray]:
    """Every key present, no extra key, every shape and dtype canonical; errors name key, expected, found."""
    if not isinstance(weights, dict):
        raise WeightsError(f"{source}: expected a dict of arrays, got {type(weights).__name__}")
    _check_keys(list(weights), source)
    for key in PARAM_SHAPES:
        arr = weights[key]
        if not isinstance(arr, np.ndarray):
            raise WeightsError(f"{source}: {key}: expected numpy array, found {type(arr).__name__}")
        _check_shape(key, arr.shape, source)
        if arr.dtype != WEIGHTS_DTYPE:
            raise WeightsError(f"{source}: {key}: expected dtype float32, found {arr.dtype}")
        if not np.isfinite(arr).all():
            raise WeightsError(f"{source}: {key}: expected finite values, found NaN or inf")
    return weights


def save_weights(path: str | os.PathLike, weights: dict[str, np.ndarray]) -> Path:
    """Validate, then write atomically (unique temp file in the same folder + rename): a crash or a
    concurrent writer never leaves a half-written file at ``path``, and a failed write leaves no temp file."""
    from safetensors.numpy import save_file

    path = Path(path)
    validate_weights(weights)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: np.ascontiguousarray(weights[k]) for k in PARAM_SHAPES}, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_weights(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read and validate a weights file; keys, shapes and dtypes are checked from the header before any
    tensor is decoded, so a file of another dtype (e.g. bfloat16, which numpy cannot read) still gets a
    ``WeightsError`` naming the key."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    source = str(path)
    try:
        with safe_open(source, framework="np") as fh:
            _check_keys(list(fh.keys()), source)
            weights = {}
            for key in PARAM_SHAPES:
                header = fh.get_slice(key)
                _check_shape(key, tuple(header.get_shape()), source)
                if header.get_dtype() != _SAFETENSORS_DTYPE:
                    raise WeightsError(
                        f"{source}: {key}: expected dtype float32 ({_SAFETENSORS_DTYPE}), found {header.get_dtype()}"
                    )
                weights[key] = fh.get_tensor(key)
    except (SafetensorError, OSError) as err:
        raise WeightsError(f"weights file {path} is not a readable safetensors file: {err}") from err
    return validate_weights(weights, source=source)
