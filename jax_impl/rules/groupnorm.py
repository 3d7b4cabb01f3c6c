"""nnx.GroupNorm (channels last, statistics over every non-batch axis: the default ``reduction_axes``) on
(B, *spatial, C) inputs (mirrors ``torch_impl.rules.groupnorm``): x^ = (a - mean) / sqrt(var + epsilon) per example
and group (C / G consecutive channels, as torch's), recomputed from the input, then
  grad    scale_b = sum_p x^_bp g_bp,  bias_b = sum_p g_bp   over the positions p   ((B, C) each);
  norm    their squared norms;   sum  scale = sum_{b,p} w_b x^_bp g_bp,  bias = sum_{b,p} w_b g_bp.
Other instances (explicit ``reduction_axes``) return None: the fallback materialises them.
Layout: scale <- weight, bias <- bias, both (C,).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jax_impl.rules import (Leaves, register_clipped_sum, register_grad_sampler, register_layout,
                            register_norm_sampler, sq)

register_layout({"scale": ("weight", None), "bias": ("bias", None)}, nnx.GroupNorm)


def _parts(layer: nnx.GroupNorm, a: jax.Array, g: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(x^ * g, g), both (B, P, C) with the P positions (every axis between batch and channels) flattened."""
    b, c = a.shape[0], a.shape[-1]
    groups = a.reshape(b, -1, layer.num_groups, c // layer.num_groups)
    centred = groups - groups.mean(axis=(1, 3), keepdims=True)
    var = jnp.square(centred).mean(axis=(1, 3), keepdims=True)
    xhat = (centred * jax.lax.rsqrt(var + layer.epsilon)).reshape(b, -1, c)
    g3 = g.reshape(b, -1, c)
    return xhat * g3, g3


def _leaves(layer: nnx.GroupNorm, scale: jax.Array, bias: jax.Array) -> Leaves:
    out = {}
    if layer.scale is not None:
        out["scale"] = scale
    if layer.bias is not None:
        out["bias"] = bias
    return out


@register_grad_sampler("groupnorm", nnx.GroupNorm)
def groupnorm_grad_sample(layer: nnx.GroupNorm, a: jax.Array, g: jax.Array) -> Leaves | None:
    """scale, bias: (B, C)."""
    if layer.reduction_axes is not None:
        return None
    xg, g3 = _parts(layer, a, g)
    return _leaves(layer, xg.sum(axis=1), g3.sum(axis=1))


@register_norm_sampler("groupnorm", nnx.GroupNorm)
def groupnorm_norm_sq(layer: nnx.GroupNorm, a: jax.Array, g: jax.Array) -> jax.Array | None:
    grads = groupnorm_grad_sample(layer, a, g)
    return None if grads is None else sum(sq(v) for v in grads.values())


@register_clipped_sum("groupnorm", nnx.GroupNorm)
def groupnorm_clipped_sum(layer: nnx.GroupNorm, a: jax.Array, g: jax.Array, w: jax.Array) -> Leaves:
    xg, g3 = _parts(layer, a, g)
    w3 = w[:, None, None]
    return _leaves(layer, (w3 * xg).sum(axis=(0, 1)), (w3 * g3).sum(axis=(0, 1)))
