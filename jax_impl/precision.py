"""Mixed precision in JAX (mirrors ``torch_impl.precision``; what runs in which precision: docs/precision.md).

``dtype="bfloat16"`` (``contract.spec.MIXED``): parameters, inputs and returned arrays stay float32 (the master
copy); a compute-dtype policy (as in jmp / Haiku's mixed precision) casts the parameters and the float inputs
to bfloat16 INSIDE the traced function (``to_compute``), so every dot and convolution takes bfloat16 operands
(XLA accumulates them in float32 and rounds the result to bfloat16), and the gradient of a float32 master
parameter comes back through the cast as float32. Whatever the privacy guarantee rests on (per-example norms,
clip factors, clipped sums) runs on float32 copies (``to_float32``).

Convolution and linear layers take ``promote_conv`` / ``promote_linear`` as Flax's ``promote_dtype``: with a
bfloat16 kernel the layer's input is cast to bfloat16 (a float32 input would otherwise promote the product to
float32), and a convolution adds its bias in float32, so that the bias gradient (the cotangent summed over the
output positions) is accumulated in float32, as torch's convolution backward does. XLA:CPU lowers a bfloat16
``reduce_sum`` with every partial sum rounded to bfloat16; with the bias added in bfloat16 that rounding put
JAX's per-sample conv-bias gradients above the bound (measured: ``paper/cpu-bf16/precision.md``, docs/precision.md).
The LSTM (``jax_impl.layers``) follows torch's autocast the same way: its products ask for a float32 result
(``wide``; XLA:CPU computes the transposed bfloat16 product of its input kernel's gradient in bfloat16 otherwise)
and its biases are added in float32, so its state is float32 (``scripts/bf16_lstm_ablation.py``).
"""
from __future__ import annotations

import os

from functools import wraps
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax.nnx.nn import dtypes as nnx_dtypes

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


def _low(v: Any) -> bool:
    return v is not None and v.dtype in LOW


# The ablation switch of scripts/bf16_jax_ablation.py (paper/cpu-bf16/jax_ablation.*): JAX_IMPL_BF16_CONV_BIAS=bfloat16
# adds conv biases in bfloat16, as Flax does by default, to show the bias-gradient error that float32 removes.
CONV_BIAS_FLOAT32 = os.environ.get("JAX_IMPL_BF16_CONV_BIAS", "float32") != "bfloat16"


# The ablation switch of scripts/bf16_lstm_ablation.py: JAX_IMPL_BF16_LSTM=dot,bias (either or both) puts that part
# of the LSTM back in bfloat16, as Flax's own promotion does: "dot" lets its products return bfloat16 (XLA:CPU then
# accumulates the transposed gate-input product in bfloat16), "bias" adds its biases in bfloat16 (so the gate
# pre-activations, the cell and hidden states and their cotangents are bfloat16 too).
LSTM_BF16 = frozenset(filter(None, os.environ.get("JAX_IMPL_BF16_LSTM", "").split(",")))


def wide(dtype: Any, part: str = "") -> Any:
    """float32 for a bfloat16/float16 ``dtype`` (the dtype a product accumulates in, and the LSTM's bias add and
    state, as under torch's autocast), ``dtype`` itself otherwise, or when ``part`` is in ``LSTM_BF16``."""
    return jnp.float32 if dtype in LOW and part not in LSTM_BF16 else dtype


def promote_linear(arrays: tuple, /, *, dtype: Any = None, inexact: bool = True) -> tuple:
    """Flax's ``promote_dtype`` for (inputs, kernel, bias) of a linear layer, except with a bfloat16 kernel (the
    mixed policy): the inputs are cast to bfloat16, whatever the previous layer returned."""
    inputs, kernel, bias = arrays
    if dtype is None and _low(kernel):
        return jnp.asarray(inputs, kernel.dtype), kernel, bias
    return nnx_dtypes.promote_dtype(arrays, dtype=dtype, inexact=inexact)


def promote_conv(arrays: tuple, /, *, dtype: Any = None, inexact: bool = True) -> tuple:
    """``promote_linear``, and with a bfloat16 kernel the bias in float32: the output is bfloat16(conv) + bias in
    float32 (the next layer rounds it to bfloat16; ReLU and max-pool in between commute with that rounding), and
    the bias gradient is a float32 sum of the bfloat16 cotangents, rounded once to bfloat16 (torch: the same)."""
    inputs, kernel, bias = promote_linear(arrays, dtype=dtype, inexact=inexact)
    if dtype is None and _low(kernel) and bias is not None and CONV_BIAS_FLOAT32:
        bias = bias.astype(jnp.float32)
    return inputs, kernel, bias
