"""Mixed precision in PyTorch (mirrors ``jax_impl.precision``; what runs in which precision: docs/precision.md).

``dtype="bfloat16"`` (``contract.spec.MIXED``): parameters, inputs and returned arrays stay float32 (the master
copy); the computation runs under ``torch.autocast(device_type, dtype=torch.bfloat16)``, which casts the inputs
of matmuls, linear layers and convolutions to bfloat16 (products in bfloat16, accumulation in float32 inside
oneDNN / cuBLAS, the result rounded to bfloat16). Whatever the privacy guarantee rests on (per-example norms,
clip factors, clipped sums) runs outside the autocast, on float32 copies (``policy`` returns ``to_float32`` of
the results).
"""
from __future__ import annotations

import contextlib
from functools import wraps
from typing import Any, Callable, ContextManager

import torch

from contract.spec import is_mixed

LOW: tuple[torch.dtype, ...] = (torch.bfloat16, torch.float16)


def compute(dtype: str, device_type: str) -> ContextManager:
    """``torch.autocast(device_type, bfloat16)`` for a mixed ``dtype``; a context that does nothing otherwise."""
    if is_mixed(dtype):
        return torch.autocast(device_type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_float32(tree: Any) -> Any:
    """A tensor, or a dict/tuple/list of them, with every bfloat16/float16 tensor upcast to float32."""
    if isinstance(tree, torch.Tensor):
        return tree.float() if tree.dtype in LOW else tree
    if isinstance(tree, dict):
        return {k: to_float32(v) for k, v in tree.items()}
    if isinstance(tree, (tuple, list)):
        return type(tree)(to_float32(v) for v in tree)
    return tree


def policy(fn: Callable[..., Any], dtype: str) -> Callable[..., Any]:
    """``fn(params, x, ...)`` run in ``dtype``'s compute precision, its results upcast to float32 (unchanged for
    a dtype that is not mixed)."""
    if not is_mixed(dtype):
        return fn

    @wraps(fn)
    def call(params: Any, x: torch.Tensor, *rest: Any) -> Any:
        with compute(dtype, x.device.type):
            out = fn(params, x, *rest)
        return to_float32(out)

    return call
