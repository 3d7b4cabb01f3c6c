"""Kind "projection": a linear map whose weight and bias belong to the PARENT module
(``torch_impl.layers.Projection``; the attention's packed [q|k|v] in-projection, ``in_proj_weight``
(3d, d) / ``in_proj_bias`` under ``nn.MultiheadAttention``'s names).

The engine records a layer's input a and output cotangent g at its module's call. The attention module owns the
in-projection's parameters, but its output comes after attention and out_proj, so its (a, g) alone cannot give the
in-projection's gradient: it took the vmap fallback over the whole module (exact; 7-32x slower than the linear
rule's norm at B = 64, ``scripts/seq_cost_model.py``). A parent that applies ALL its own parameters through one
parameter-free ``Projection`` child is recorded at the child's call instead (``rules.site_module``): g = d loss /
d (x W^T + b), and the linear kind's math applies unchanged (``rules.linear.weight_grads`` / ``weight_norm_sq``
with its Gram-or-materialise cost model / ``weight_clipped_sum``), the leaves named by the parent's attributes.
Always covered (never None for grads or sums): a projection site cannot take the fallback, which would vmap the
parameter-free child.
"""
from __future__ import annotations

import torch

from torch_impl.layers import Projection
from torch_impl.rules import SITE_TYPES, Leaves, register_clipped_sum, register_grad_sampler, register_norm_sampler
from torch_impl.rules.linear import weight_clipped_sum, weight_grads, weight_norm_sq

Tensor = torch.Tensor
SITE_TYPES.add(Projection)


def _leaves(layer: Projection, weight: Tensor, bias: Tensor) -> Leaves:
    return {layer.weight_name: weight, **({layer.bias_name: bias} if layer.bias_name else {})}


@register_grad_sampler("projection", Projection)
def projection_grad_sample(layer: Projection, a: Tensor, g: Tensor) -> Leaves:
    return _leaves(layer, *weight_grads(a, g))


@register_norm_sampler("projection", Projection)
def projection_norm_sq(layer: Projection, a: Tensor, g: Tensor) -> Tensor | None:
    return weight_norm_sq(a, g, layer.bias_name is not None)


@register_clipped_sum("projection", Projection)
def projection_clipped_sum(layer: Projection, a: Tensor, g: Tensor, w: Tensor) -> Leaves:
    return _leaves(layer, *weight_clipped_sum(a, g, w))
