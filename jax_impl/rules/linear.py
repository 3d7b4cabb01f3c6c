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

from jax_impl.models.common import PRECISION
from jax_impl.rules import Leaves, gram_is_cheaper, in_bookkeeping, register_clipped_sum, register_grad_sampler, \
    register_norm_sampler, sq


def _positions(a: jax.Array, g: jax.Array) -> tuple[jax.Array, jax.Array]:
    return a.reshape(a.shape[0], -1, a.shape[-1]), g.reshape(g.shape[0], -1, g.shape[-1])


def _with_bias(layer: nnx.Linear, kernel: jax.Array, bias: jax.Array) -> Leaves:
    return {"kernel": kernel, "bias": bias} if layer.bias is not None else {"kernel": kernel}


# Linear layers on T positions: gram when T (d + p) < LINEAR_GRAM_SLACK * d p. Measured (scripts/seq_cost_model.py,
# paper/cpu-seq-costmodel/: the transformer's in_proj 256->768, out_proj 256->256, linear1 / linear2 256<->1024 at
# T = 32 / 128 / 512, B = 64, float32, 1 thread, medians of interleaved repeats, shared 2-core Xeon): slack 1 chose
# the slower form on 2 of 24 points, both out_proj at T = 128 (cost ratio T (d + p) / (d p) exactly 1: a tie the
# model breaks towards materialising), where gram was 1.19x (torch) / 1.74x (JAX) faster; Gram also won at ratios
# 0.16-0.67 (1.35-23x) and materialising at 2.5-4 (1.85-4.5x). Every slack in (1, 2.5] ranks all 24 points right;
# 1.6 (about their geometric middle) is used. Same value in both frameworks.
LINEAR_GRAM_SLACK = 1.6

# Inside book-keeping (``rules.in_bookkeeping()``): gram when T^2 (d + p) < BK_MATERIALISE_COST * d p, i.e. the
# slack BK_MATERIALISE_COST / T. Why another rule: the Gram-normed layer's bk sum is one more weight gradient
# (T d p per example) on top of the Gram products (T^2 (d + p)), while a materialised layer writes its d p gradient
# values (T d p) and sums them by a tensordot; so Gram wins when T^2 (d + p) < c d p, c = the cost of writing and
# re-reading one gradient value in multiply-adds (~25-30 on this CPU: ~50 GFLOP/s against ~7 GB/s of writes).
# Measured (scripts/seq_length_panel.py, whole bk steps of the transformer, B = 64, every linear layer forced to
# one form, paper/cpu-seq-panel*/): Gram 0.79x materialise at T = 32 (T^2 (d + p) / (d p) = 5-8) in both
# frameworks, 1.13x (torch) / 1.06x (JAX) at T = 128 (80-128), 1.16x / 1.41x at T = 512, while the norm-only rule
# (LINEAR_GRAM_SLACK) picks Gram up to T = 205-328 there. 25 sits between 8 and 80 (about their geometric middle).
# dp_ghost keeps LINEAR_GRAM_SLACK: its sums come from a second backward whichever form the norm takes.
BK_MATERIALISE_COST = 25.0


def weight_grads(a: jax.Array, g: jax.Array) -> tuple[jax.Array, jax.Array]:
    """a: (B, [T...,] in), g: (B, [T...,] out) -> per-example (kernel (B, in, out), bias (B, out)) of y = a K + b
    (also the "projection" kind's, ``rules.projection``)."""
    if a.ndim == 2:
        return jnp.einsum("bi,bo->bio", a, g, precision=PRECISION), g
    a3, g3 = _positions(a, g)
    return jnp.einsum("bti,bto->bio", a3, g3, precision=PRECISION), g3.sum(axis=1)


def weight_norm_sq(a: jax.Array, g: jax.Array, bias: bool) -> jax.Array | None:
    """(B,) squared norm of (kernel, bias if ``bias``) per example, or None when materialising is cheaper."""
    if a.ndim == 2:
        gs = sq(g)
        return gs * (sq(a) + 1.0) if bias else gs * sq(a)
    a3, g3 = _positions(a, g)
    t = a3.shape[1]
    slack = BK_MATERIALISE_COST / t if in_bookkeeping() else LINEAR_GRAM_SLACK
    if not gram_is_cheaper(t, a3.shape[2], g3.shape[2], slack):
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
