"""nnx.GroupNorm (channels last, statistics over every non-batch axis: the default ``reduction_axes``) on
(B, *spatial, C) inputs (mirrors ``torch_impl.rules.groupnorm``): x^ = (a - mean) / sqrt(var + epsilon) per example
and group (C / G consecutive channels, as torch's), recomputed from the input; the rules are the normalisation
kinds' (``rules/normalization.py``) over every position.
Other instances (explicit ``reduction_axes``) return None: the fallback materialises them.
Layout: scale <- weight, bias <- bias, both (C,).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jax_impl.rules.normalization import register_affine_normalization


def _parts(layer: nnx.GroupNorm, a: jax.Array, g: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(x^ * g, g), both (B, P, C) with the P positions (every axis between batch and channels) flattened."""
    b, c = a.shape[0], a.shape[-1]
    groups = a.reshape(b, -1, layer.num_groups, c // layer.num_groups)
    centred = groups - groups.mean(axis=(1, 3), keepdims=True)
    var = jnp.square(centred).mean(axis=(1, 3), keepdims=True)
    xhat = (centred * jax.lax.rsqrt(var + layer.epsilon)).reshape(b, -1, c)
    g3 = g.reshape(b, -1, c)
    return xhat * g3, g3


def _covered(layer: nnx.GroupNorm) -> bool:
    return layer.reduction_axes is None


# scale, bias: (B, C)
groupnorm_grad_sample, groupnorm_norm_sq, groupnorm_clipped_sum = register_affine_normalization(
    "groupnorm", nnx.GroupNorm, _parts, _covered)
