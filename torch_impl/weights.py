"""Canonical (state_dict names/layouts, numpy) <-> native torch tensors.

PyTorch *is* the canonical layout, so the list of transposes is empty; the shapes are still checked.
The JAX side's conversion is one rule per layer kind (``jax_impl.weights``); here every kind is the identity.
"""
from __future__ import annotations

import numpy as np
import torch

from contract.spec import DEFAULT_MODEL, DeviceError, InputError
from contract.weights import source_dtypes, validate_weights
from torch_impl.model import Net, resolve

TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def full_float32() -> dict[str, object]:
    """Turn TF32 off for float32 matmuls and cuDNN convolutions (process-wide torch flags); returns them.

    TF32 keeps 10 mantissa bits (relative error ~5e-4 per product), which would swamp the float32 agreement
    tolerance; JAX is held to the same by ``precision=HIGHEST`` on every dot and convolution
    (``jax_impl.model.PRECISION``). Called whenever a cuda device is resolved, so every torch path on a GPU
    (per-sample methods, reference, DP steps, training) computes in full float32.
    Only the legacy flags, on purpose: torch >= 2.9 prefers ``...fp32_precision = "ieee"`` and warns about these,
    but a new-API write makes torch.compile's own legacy reads raise a mixed-API RuntimeError (pytorch#166387,
    fixed only after 2.11), and a GPU image with torch 2.11 / jax 0.11.2 runs ``compile`` / ``compile_cudagraphs``.
    """
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    return precision_flags()


def precision_flags() -> dict[str, object]:
    """The flags in force (recorded with GPU results)."""
    return {"matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision()}


def resolve_device(device: str | None) -> torch.device:
    """None -> cuda when available else cpu; "gpu" is accepted as an alias of "cuda". A cuda device turns TF32
    off (``full_float32``); asking for cuda without one raises ``DeviceError`` (one line, no CUDA traceback)."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device in ("cuda", "gpu"):
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise DeviceError(f"device='cuda' requested but torch {torch.__version__} sees no CUDA device ({build})")
        full_float32()
        return torch.device("cuda")
    if device == "cpu":
        return torch.device("cpu")
    raise InputError(f"unknown device {device!r}; expected 'cpu', 'cuda'/'gpu' or None")


def to_native(
    weights: dict[str, np.ndarray], dtype: str = "float32", device: str | None = None,
    model: str | Net = DEFAULT_MODEL,
) -> dict[str, torch.Tensor]:
    """Always copies (``torch.tensor``): ``as_tensor`` would alias a float32 array on CPU, so an in-place update
    of a native parameter would silently edit the caller's canonical weights (and warn on read-only arrays)."""
    spec = resolve(model).spec
    validate_weights(weights, model=spec, dtypes=source_dtypes(dtype))
    dev = resolve_device(device)
    return {k: torch.tensor(weights[k], dtype=TORCH_DTYPES[dtype], device=dev) for k in spec.param_shapes}


def to_canonical(
    params: dict[str, torch.Tensor], batch_axis: bool = False, model: str | Net = DEFAULT_MODEL
) -> dict[str, np.ndarray]:
    """Native tensors (optionally with a leading per-sample axis) -> canonical numpy arrays."""
    out = {}
    for k, shape in resolve(model).spec.param_shapes.items():
        arr = params[k].detach().cpu().numpy()
        got = arr.shape[1:] if batch_axis else arr.shape
        assert got == shape, f"{k}: native shape {got} != canonical {shape}"
        out[k] = arr
    return out
