"""Canonical (state_dict names/layouts, numpy) <-> native torch tensors.

PyTorch *is* the canonical layout, so the list of transposes is empty; the shapes are still checked.
"""
from __future__ import annotations

import numpy as np
import torch

from compare.spec import PARAM_SHAPES, InputError
from compare.weights import validate_weights

# canonical name -> (native name, permutation applied to the canonical array); identity here.
TRANSPOSES: dict[str, tuple[int, ...]] = {}

TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_device(device: str | None) -> torch.device:
    """None -> cuda when available else cpu; "gpu" is accepted as an alias of "cuda"."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device in ("cuda", "gpu"):
        if not torch.cuda.is_available():
            raise RuntimeError("device='cuda' requested but torch sees no CUDA device")
        return torch.device("cuda")
    if device == "cpu":
        return torch.device("cpu")
    raise InputError(f"unknown device {device!r}; expected 'cpu', 'cuda'/'gpu' or None")


def to_native(
    weights: dict[str, np.ndarray], dtype: str = "float32", device: str | None = None
) -> dict[str, torch.Tensor]:
    """Always copies (``torch.tensor``): ``as_tensor`` would alias a float32 array on CPU, so an in-place update
    of a native parameter would silently edit the caller's canonical weights (and warn on read-only arrays)."""
    validate_weights(weights)
    dev = resolve_device(device)
    return {k: torch.tensor(weights[k], dtype=TORCH_DTYPES[dtype], device=dev) for k in PARAM_SHAPES}


def to_canonical(params: dict[str, torch.Tensor], batch_axis: bool = False) -> dict[str, np.ndarray]:
    """Native tensors (optionally with a leading per-sample axis) -> canonical numpy arrays."""
    out = {}
    for k, shape in PARAM_SHAPES.items():
        arr = params[k].detach().cpu().numpy()
        got = arr.shape[1:] if batch_axis else arr.shape
        assert got == shape, f"{k}: native shape {got} != canonical {shape}"
        out[k] = arr
    return out
