"""nnx.LayerNorm (last axis, scale and/or bias) on (B, d) or (B, T..., d) inputs (mirrors
``torch_impl.rules.layernorm``): x^ = (a - mean) / sqrt(var + epsilon) over the last axis, recomputed from the
input; the rules are the normalisation kinds' (``rules/normalization.py``) over the T... positions.
Other instances (reduction or feature axes other than the last) return None: the fallback materialises them.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jax_impl.rules.normalization import register_affine_normalization


def _axes(v: object) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,)


def _covered(layer: nnx.LayerNorm) -> bool:
    return _axes(layer.reduction_axes) == (-1,) and _axes(layer.feature_axes) == (-1,)


def _parts(layer: nnx.LayerNorm, a: jax.Array, g: jax.Array) -> tuple[jax.Array, jax.Array]:
    a3, g3 = a.reshape(a.shape[0], -1, a.shape[-1]), g.reshape(g.shape[0], -1, g.shape[-1])
    centred = a3 - a3.mean(axis=-1, keepdims=True)
    var = jnp.square(centred).mean(axis=-1, keepdims=True)
    return centred * jax.lax.rsqrt(var + layer.epsilon) * g3, g3


layernorm_grad_sample, layernorm_norm_sq, layernorm_clipped_sum = register_affine_normalization(
    "layernorm", nnx.LayerNorm, _parts, _covered)
