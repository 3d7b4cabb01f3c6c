"""The one shared weights file per workload: canonical ``dict[str, np.ndarray]`` in safetensors format.

The file's metadata records the workload (``{"model": name}``); a file of another workload is one
``WeightsError`` that names both, whether or not its metadata says so (its keys and shapes are matched
against every registered workload).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from contract.spec import DEFAULT_MODEL, MODELS, Workload, check_model

WEIGHTS_DTYPE = np.float32
_SAFETENSORS_DTYPE = "F32"  # how safetensors' header spells WEIGHTS_DTYPE


class WeightsError(ValueError):
    """The weights file or dict does not match the model's canonical parameters."""


def _workload_of(shapes: dict[str, tuple[int, ...]]) -> str | None:
    """The registered workload whose canonical keys and shapes these are, if any."""
    return next((name for name, w in MODELS.items() if w.param_shapes == shapes), None)


def _check_workload(found: dict[str, tuple[int, ...]], spec: Workload, source: str, claimed: str | None) -> None:
    """One clear error for a file of ANOTHER workload (by its metadata, or by its keys and shapes)."""
    other = claimed if claimed in MODELS and claimed != spec.name else None
    other = other or (None if found == spec.param_shapes else _workload_of(found))
    if other is not None and other != spec.name:
        raise WeightsError(f"{source}: these are the weights of model {other!r}, not of model {spec.name!r} "
                           f"(pass model={other!r} / --model {other}, or the {spec.name} weights file)")


def _check_keys(found: list[str], source: str, spec: Workload) -> None:
    missing = [k for k in spec.param_shapes if k not in found]
    extra = [k for k in found if k not in spec.param_shapes]
    if missing or extra:
        raise WeightsError(
            f"{source}: missing key(s) {missing}, unexpected key(s) {extra}; "
            f"expected keys {list(spec.param_shapes)}, found keys {list(found)}"
        )


def _check_shape(key: str, found: tuple[int, ...], source: str, spec: Workload) -> None:
    if found != spec.param_shapes[key]:
        raise WeightsError(f"{source}: {key}: expected shape {spec.param_shapes[key]}, found {found}")


def validate_weights(
    weights: dict[str, np.ndarray], source: str = "weights", model: str | Workload = DEFAULT_MODEL
) -> dict[str, np.ndarray]:
    """Every key present, no extra key, every shape and dtype canonical; errors name key, expected, found."""
    spec = check_model(model)
    if not isinstance(weights, dict):
        raise WeightsError(f"{source}: expected a dict of arrays, got {type(weights).__name__}")
    _check_workload({k: tuple(np.shape(v)) for k, v in weights.items()}, spec, source, None)
    _check_keys(list(weights), source, spec)
    for key in spec.param_shapes:
        arr = weights[key]
        if not isinstance(arr, np.ndarray):
            raise WeightsError(f"{source}: {key}: expected numpy array, found {type(arr).__name__}")
        _check_shape(key, arr.shape, source, spec)
        if arr.dtype != WEIGHTS_DTYPE:
            raise WeightsError(f"{source}: {key}: expected dtype float32, found {arr.dtype}")
        if not np.isfinite(arr).all():
            raise WeightsError(f"{source}: {key}: expected finite values, found NaN or inf")
    return weights


def save_weights(
    path: str | os.PathLike, weights: dict[str, np.ndarray], model: str | Workload = DEFAULT_MODEL
) -> Path:
    """Validate, then write atomically (unique temp file in the same folder + rename): a crash or a
    concurrent writer never leaves a half-written file at ``path``, and a failed write leaves no temp file."""
    from safetensors.numpy import save_file

    path = Path(path)
    spec = check_model(model)
    validate_weights(weights, model=spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: np.ascontiguousarray(weights[k]) for k in spec.param_shapes}, tmp,
                  metadata={"model": spec.name})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_weights(path: str | os.PathLike, model: str | Workload = DEFAULT_MODEL) -> dict[str, np.ndarray]:
    """Read and validate a weights file; keys, shapes and dtypes are checked from the header before any
    tensor is decoded, so a file of another dtype (e.g. bfloat16, which numpy cannot read) still gets a
    ``WeightsError`` naming the key."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    spec = check_model(model)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    source = str(path)
    try:
        with safe_open(source, framework="np") as fh:
            shapes = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
            _check_workload(shapes, spec, source, (fh.metadata() or {}).get("model"))
            _check_keys(list(fh.keys()), source, spec)
            weights = {}
            for key in spec.param_shapes:
                header = fh.get_slice(key)
                _check_shape(key, tuple(header.get_shape()), source, spec)
                if header.get_dtype() != _SAFETENSORS_DTYPE:
                    raise WeightsError(
                        f"{source}: {key}: expected dtype float32 ({_SAFETENSORS_DTYPE}), found {header.get_dtype()}"
                    )
                weights[key] = fh.get_tensor(key)
    except (SafetensorError, OSError) as err:
        raise WeightsError(f"weights file {path} is not a readable safetensors file: {err}") from err
    return validate_weights(weights, source=source, model=spec)
