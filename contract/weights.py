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
    weights: dict[str, np.ndarray], source: str = "weights", model: str | Workload = DEFAULT_MODEL,
    dtypes: tuple[type, ...] = (WEIGHTS_DTYPE,),
) -> dict[str, np.ndarray]:
    """Every key present, no extra key, every shape canonical and every dtype one of ``dtypes`` (float32, the
    weights file's; a training checkpoint of a float64 run also holds float64); errors name key, expected,
    found."""
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
        if arr.dtype not in [np.dtype(d) for d in dtypes]:
            expected = " or ".join(np.dtype(d).name for d in dtypes)
            raise WeightsError(f"{source}: {key}: expected dtype {expected}, found {arr.dtype}")
        if not np.isfinite(arr).all():
            raise WeightsError(f"{source}: {key}: expected finite values, found NaN or inf")
    return weights


def save_weights(
    path: str | os.PathLike, weights: dict[str, np.ndarray], model: str | Workload = DEFAULT_MODEL
) -> Path:
    """Validate, then write atomically (unique temp file in the same folder + rename): a crash or a
    concurrent writer never leaves a half-written file at ``path``, and a failed write leaves no temp file."""
    path = Path(path)
    spec = check_model(model)
    validate_weights(weights, model=spec)
    return _write_atomic(path, {k: weights[k] for k in spec.param_shapes}, {"model": spec.name})


def _write_atomic(path: Path, arrays: dict[str, np.ndarray], metadata: dict[str, str]) -> Path:
    """safetensors to a unique temp file in ``path``'s folder, flushed to disk, then renamed over ``path``."""
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, tmp, metadata=metadata)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())  # the rename must not land before the data (a power cut keeps the old file)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


STATE_DTYPES = (np.float32, np.float64)  # a checkpoint keeps the parameters in the dtype they train in


def source_dtypes(dtype: str) -> tuple[type, ...]:
    """The canonical dtypes a side's ``to_native(weights, dtype)`` takes: float32 (the weights file's), and
    float64 when converting to float64 (a float64 run's checkpoint: exact, where float32 would round)."""
    return (WEIGHTS_DTYPE, np.float64) if dtype == "float64" else (WEIGHTS_DTYPE,)


def save_state(path: str | os.PathLike, params: dict[str, np.ndarray], metadata: dict[str, str],
               model: str | Workload = DEFAULT_MODEL) -> Path:
    """A training checkpoint: canonical ``params`` (float32 or float64, as trained) plus string ``metadata``
    (the rest of the state), in one safetensors file written atomically like ``save_weights``."""
    spec = check_model(model)
    validate_weights(params, source=str(path), model=spec, dtypes=STATE_DTYPES)
    return _write_atomic(Path(path), {k: params[k] for k in spec.param_shapes}, {**metadata, "model": spec.name})


def load_state(path: str | os.PathLike,
               model: str | Workload = DEFAULT_MODEL) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """``save_state``'s ``(params, metadata)``; ``WeightsError`` for a missing, unreadable or mismatched file."""
    from safetensors import SafetensorError, safe_open

    spec = check_model(model)
    try:
        with safe_open(str(path), framework="np") as fh:
            metadata = dict(fh.metadata() or {})
            shapes = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
            _check_workload(shapes, spec, str(path), metadata.get("model"))
            _check_keys(list(fh.keys()), str(path), spec)
            params = {k: fh.get_tensor(k) for k in spec.param_shapes}
    except (SafetensorError, OSError) as err:
        raise WeightsError(f"checkpoint {path} is not a readable safetensors file: {err}") from err
    return validate_weights(params, source=str(path), model=spec, dtypes=STATE_DTYPES), metadata


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
