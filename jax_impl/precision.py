"""Mixed precision in JAX (mirrors ``torch_impl.precision``; what runs in which precision: docs/precision.md).

``dtype="bfloat16"`` (``contract.spec.MIXED``): parameters, inputs and returned arrays stay float32 (the master
copy); a compute-dtype policy (as in jmp / Haiku's mixed precision) casts the parameters and the float inputs
to bfloat16 INSIDE the traced function (``to_compute``), so every dot and convolution takes bfloat16 operands
(XLA accumulates them in float32 and rounds the result to bfloat16), and the gradient of a float32 master
parameter comes back through the cast as float32. Whatever the privacy guarantee rests on (per-example norms,
clip factors, clipped sums) runs on float32 copies (``to_float32``).
"""
from __future__ import annotations

from functools import wraps
from typing import Any, Callable

import jax
import jax.numpy as jnp

from contract.spec import is_mixed

LOW: tuple[Any, ...] = (jnp.bfloat16, jnp.float16)


def to_compute(tree: Any, dtype: str) -> Any:
    """Every float leaf of ``tree`` cast to bfloat16 for a mixed ``dtype`` (integer leaves: token ids, labels,
    kept); ``tree`` itself otherwise."""
    if not is_mixed(dtype):
        return tree
    return jax.tree.map(lambda v: v.astype(jnp.bfloat16) if jnp.issubdtype(v.dtype, jnp.floating) else v, tree)


def to_float32(tree: Any) -> Any:
    """``tree`` with every bfloat16/float16 leaf upcast to float32."""
    return jax.tree.map(lambda v: v.astype(jnp.float32) if v.dtype in LOW else v, tree)


def policy(fn: Callable[..., Any], dtype: str) -> Callable[..., Any]:
    """``fn(params, x, ...)`` on bfloat16 casts of params and x, its results upcast to float32 (unchanged for a
    dtype that is not mixed)."""
    if not is_mixed(dtype):
        return fn

    @wraps(fn)
    def call(params: Any, x: jax.Array, *rest: Any) -> Any:
        return to_float32(fn(to_compute(params, dtype), to_compute(x, dtype), *rest))

    return call
