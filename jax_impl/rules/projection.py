"""Kind "projection" (mirrors ``torch_impl.rules.projection``): a linear map whose kernel and bias belong to the
PARENT module (``jax_impl.layers.Projection``; the attention's packed in-projection
``in_proj_kernel`` (d, 3d) / ``in_proj_bias``). The parent is recorded at the child's call
(``rules.site_child``), so g = d loss / d (x K + b) and the linear kind's math applies, leaves named by the
parent's attributes. Always covered (a projection site cannot take the fallback).
Layout of the parent ``MultiheadSelfAttention``: in_proj_kernel (d, 3d) <- in_proj_weight (3d, d) transposed
([q | k | v] columns, heads contiguous within each; ``jax_impl.models.transformer``), in_proj_bias unchanged.
"""
from __future__ import annotations

import jax

from jax_impl.layers import MultiheadSelfAttention, Projection
from jax_impl.rules import (SITE_TYPES, Leaves, register_clipped_sum, register_grad_sampler, register_layout,
                            register_norm_sampler)
from jax_impl.rules.linear import weight_clipped_sum, weight_grads, weight_norm_sq

SITE_TYPES.add(Projection)
register_layout({"in_proj_kernel": ("in_proj_weight", (1, 0)), "in_proj_bias": ("in_proj_bias", None)},
                MultiheadSelfAttention)


def _leaves(layer: Projection, kernel: jax.Array, bias: jax.Array) -> Leaves:
    return {layer.kernel_name: kernel, **({layer.bias_name: bias} if layer.bias_name else {})}


@register_grad_sampler("projection", Projection)
def projection_grad_sample(layer: Projection, a: jax.Array, g: jax.Array) -> Leaves:
    return _leaves(layer, *weight_grads(a, g))


@register_norm_sampler("projection", Projection)
def projection_norm_sq(layer: Projection, a: jax.Array, g: jax.Array) -> jax.Array | None:
    return weight_norm_sq(a, g, layer.bias_name is not None)


@register_clipped_sum("projection", Projection)
def projection_clipped_sum(layer: Projection, a: jax.Array, g: jax.Array, w: jax.Array) -> Leaves:
    return _leaves(layer, *weight_clipped_sum(a, g, w))
