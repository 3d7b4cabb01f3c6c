"""nnx.Linear (kernel (in, out)) on (B, d) inputs and on (B, T..., d) inputs (a layer applied at T positions).

  grad    kernel_b = sum_t a_bt g_bt^T, bias_b = sum_t g_bt;
  norm    T = 1: ||g_b||^2 (||a_b||^2 + 1) (rank one); T > 1: Gram form when ``gram_is_cheaper``, else None;
  sum     kernel = a^T (w g) over examples and positions (one matmul), bias = sum of w g.
The T = 1 outer product: XLA:CPU emits one broadcast-multiply loop fusion at ~4 GB/s, 3.5x slower than
filling the same buffer (seed fc1, B=64, non-releasing malloc: 70 vs 20 ms). No rewrite helped (all within
noise or slower): broadcast multiply in either operand order, ``dot_general`` with a size-1 contraction, the
(B, out, in) product, a zero-padded K=2 or K=8 batched matmul, ``vmap(jnp.outer)``, ``lax.map`` /
``fori_loop`` over samples, or the XLA flags ``xla_cpu_prefer_vector_width`` and ``xla_cpu_enable_fast_math``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jax_impl.layers import PRECISION
from jax_impl.precision import wide
from contract.cost_model import norm_route
from jax_impl.rules import (Leaves, register_clipped_sum, register_grad_sampler, register_layout,
                            register_norm_sampler, sq)

# native kernel (in, out) <- canonical weight (out, in)
register_layout({"kernel": ("weight", (1, 0)), "bias": ("bias", None)}, nnx.Linear)


def _positions(a: jax.Array, g: jax.Array) -> tuple[jax.Array, jax.Array]:
    return a.reshape(a.shape[0], -1, a.shape[-1]), g.reshape(g.shape[0], -1, g.shape[-1])


def _with_bias(layer: nnx.Linear, kernel: jax.Array, bias: jax.Array) -> Leaves:
    return {"kernel": kernel, "bias": bias} if layer.bias is not None else {"kernel": kernel}


def weight_grads(a: jax.Array, g: jax.Array) -> tuple[jax.Array, jax.Array]:
    """a: (B, [T...,] in), g: (B, [T...,] out) -> per-example (kernel (B, in, out), bias (B, out)) of y = a K + b
    (also the "projection" kind's, ``rules.projection``). In bfloat16 a is rounded to g's bfloat16, as the layer
    rounds its input (``promote_linear``; torch's autocast: the same), and the sum over T accumulates in float32."""
    a = a.astype(g.dtype)
    if a.ndim == 2:
        return jnp.einsum("bi,bo->bio", a, g, precision=PRECISION), g
    a3, g3 = _positions(a, g)
    kernel = jnp.einsum("bti,bto->bio", a3, g3, precision=PRECISION, preferred_element_type=wide(g.dtype))
    return kernel.astype(g.dtype), g3.sum(axis=1)


def weight_norm_sq(a: jax.Array, g: jax.Array, bias: bool) -> jax.Array | None:
    """(B,) squared norm of (kernel, bias if ``bias``) per example, or None when materialising is cheaper."""
    if a.ndim == 2:
        gs = sq(g)
        return gs * (sq(a) + 1.0) if bias else gs * sq(a)
    a3, g3 = _positions(a, g)
    t = a3.shape[1]
    if norm_route("linear", t, a3.shape[2], g3.shape[2]) == "materialize":
        return None
    gram = lambda v: jnp.einsum("btd,bsd->bts", v, v, precision=PRECISION)  # noqa: E731
    out = (gram(a3) * gram(g3)).sum(axis=(1, 2))
    return out + sq(g3.sum(axis=1)) if bias else out


def weight_clipped_sum(a: jax.Array, g: jax.Array, w: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(sum_b w_b kernel_b, sum_b w_b bias_b) over all examples and positions: one matmul."""
    gc = (g * w.reshape(-1, *([1] * (g.ndim - 1)))).reshape(-1, g.shape[-1])
    return jnp.matmul(a.reshape(-1, a.shape[-1]).T, gc, precision=PRECISION), gc.sum(axis=0)


@register_grad_sampler("linear", nnx.Linear)
def linear_grad_sample(layer: nnx.Linear, a: jax.Array, g: jax.Array) -> Leaves:
    """a: (B, [T...,] in), g: (B, [T...,] out) -> kernel (B, in, out), bias (B, out)."""
    return _with_bias(layer, *weight_grads(a, g))


@register_norm_sampler("linear", nnx.Linear)
def linear_norm_sq(layer: nnx.Linear, a: jax.Array, g: jax.Array) -> jax.Array | None:
    return weight_norm_sq(a, g, layer.bias is not None)


@register_clipped_sum("linear", nnx.Linear)
def linear_clipped_sum(layer: nnx.Linear, a: jax.Array, g: jax.Array, w: jax.Array) -> Leaves:
    return _with_bias(layer, *weight_clipped_sum(a, g, w))
