"""nnx.LayerNorm (last axis, scale and/or bias) on (B, d) or (B, T..., d) inputs (mirrors
``torch_impl.rules.layernorm``): x^ = (a - mean) / sqrt(var + epsilon) recomputed from the input, then
  grad    scale_b = sum_t x^_bt g_bt,  bias_b = sum_t g_bt;   norm  their squared norms;
  sum     scale = sum_{b,t} w_b x^_bt g_bt,  bias = sum_{b,t} w_b g_bt.
Other instances (reduction or feature axes other than the last) return None: the fallback materialises them.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jax_impl.rules import (Leaves, register_clipped_sum, register_grad_sampler, register_layout,
                            register_norm_sampler, sq)

register_layout({"scale": ("weight", None), "bias": ("bias", None)}, nnx.LayerNorm)


def _axes(v: object) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,)


def _covered(layer: nnx.LayerNorm) -> bool:
    return _axes(layer.reduction_axes) == (-1,) and _axes(layer.feature_axes) == (-1,)


def _parts(layer: nnx.LayerNorm, a: jax.Array, g: jax.Array) -> tuple[jax.Array, jax.Array]:
    a3, g3 = a.reshape(a.shape[0], -1, a.shape[-1]), g.reshape(g.shape[0], -1, g.shape[-1])
    centred = a3 - a3.mean(axis=-1, keepdims=True)
    var = jnp.square(centred).mean(axis=-1, keepdims=True)
    return centred * jax.lax.rsqrt(var + layer.epsilon) * g3, g3


def _leaves(layer: nnx.LayerNorm, scale: jax.Array, bias: jax.Array) -> Leaves:
    out = {}
    if layer.scale is not None:
        out["scale"] = scale
    if layer.bias is not None:
        out["bias"] = bias
    return out


@register_grad_sampler("layernorm", nnx.LayerNorm)
def layernorm_grad_sample(layer: nnx.LayerNorm, a: jax.Array, g: jax.Array) -> Leaves | None:
    if not _covered(layer):
        return None
    xg, g3 = _parts(layer, a, g)
    return _leaves(layer, xg.sum(axis=1), g3.sum(axis=1))


@register_norm_sampler("layernorm", nnx.LayerNorm)
def layernorm_norm_sq(layer: nnx.LayerNorm, a: jax.Array, g: jax.Array) -> jax.Array | None:
    grads = layernorm_grad_sample(layer, a, g)
    return None if grads is None else sum(sq(v) for v in grads.values())


@register_clipped_sum("layernorm", nnx.LayerNorm)
def layernorm_clipped_sum(layer: nnx.LayerNorm, a: jax.Array, g: jax.Array, w: jax.Array) -> Leaves:
    xg, g3 = _parts(layer, a, g)
    w3 = w[:, None, None]
    return _leaves(layer, (w3 * xg).sum(axis=(0, 1)), (w3 * g3).sum(axis=(0, 1)))
