"""Kind "param_add" (mirrors ``torch_impl.rules.param_add``): a module that adds its one parameter, shaped like
the trailing axes of the (B, ...) activation (``jax_impl.layers.LearnedPositions``); each example's
gradient is its output cotangent:  grad  g_b;  norm  ||g_b||^2;  sum  sum_b w_b g_b."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jax_impl.layers import PRECISION, LearnedPositions
from jax_impl.rules import Leaves, register_clipped_sum, register_grad_sampler, register_norm_sampler, sq


def _fits(layer: nnx.Module, g: jax.Array) -> bool:
    return tuple(g.shape[1:]) == tuple(layer.weight.shape)


@register_grad_sampler("param_add", LearnedPositions)
def param_add_grad_sample(layer: nnx.Module, a: jax.Array, g: jax.Array) -> Leaves | None:
    return {"weight": g} if _fits(layer, g) else None


@register_norm_sampler("param_add", LearnedPositions)
def param_add_norm_sq(layer: nnx.Module, a: jax.Array, g: jax.Array) -> jax.Array | None:
    return sq(g) if _fits(layer, g) else None


@register_clipped_sum("param_add", LearnedPositions)
def param_add_clipped_sum(layer: nnx.Module, a: jax.Array, g: jax.Array, w: jax.Array) -> Leaves:
    return {"weight": jnp.tensordot(w, g, axes=1, precision=PRECISION)}
