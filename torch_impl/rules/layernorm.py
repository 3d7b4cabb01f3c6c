"""nn.LayerNorm (one normalised axis, the last; elementwise affine) on (B, d) or (B, T..., d) inputs.

With x^ = (a - mean) / sqrt(var + eps) over the last axis (recomputed from the layer input a: the rule needs no
parameter), y = x^ * weight + bias, so per example
  grad    weight_b = sum_t x^_bt * g_bt,  bias_b = sum_t g_bt            ((B, d) each: nothing to avoid)
  norm    ||weight_b||^2 + ||bias_b||^2 of those (B x d values: always cheaper than any Gram form)
  sum     weight = sum_{b,t} w_b x^_bt * g_bt,  bias = sum_{b,t} w_b g_bt.
Other instances (no affine, a multi-axis ``normalized_shape``) return None: the fallback materialises them.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from torch_impl.rules import Leaves, register_clipped_sum, register_grad_sampler, register_norm_sampler, sq

Tensor = torch.Tensor


def _covered(layer: nn.LayerNorm) -> bool:
    return len(layer.normalized_shape) == 1 and layer.elementwise_affine


def _parts(layer: nn.LayerNorm, a: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
    """(x^ * g, g), both (B, N, d) with every axis between batch and features flattened to N positions."""
    a3, g3 = a.reshape(a.shape[0], -1, a.shape[-1]), g.reshape(g.shape[0], -1, g.shape[-1])
    mean = a3.mean(-1, keepdim=True)
    var = (a3 - mean).square().mean(-1, keepdim=True)
    return (a3 - mean) * torch.rsqrt(var + layer.eps) * g3, g3


def _leaves(layer: nn.LayerNorm, weight: Tensor, bias: Tensor) -> Leaves:
    return {"weight": weight, "bias": bias} if layer.bias is not None else {"weight": weight}


@register_grad_sampler("layernorm", nn.LayerNorm)
def layernorm_grad_sample(layer: nn.LayerNorm, a: Tensor, g: Tensor) -> Leaves | None:
    if not _covered(layer):
        return None
    xg, g3 = _parts(layer, a, g)
    return _leaves(layer, xg.sum(1), g3.sum(1))


@register_norm_sampler("layernorm", nn.LayerNorm)
def layernorm_norm_sq(layer: nn.LayerNorm, a: Tensor, g: Tensor) -> Tensor | None:
    grads = layernorm_grad_sample(layer, a, g)
    return None if grads is None else sum(sq(v) for v in grads.values())


@register_clipped_sum("layernorm", nn.LayerNorm)
def layernorm_clipped_sum(layer: nn.LayerNorm, a: Tensor, g: Tensor, w: Tensor) -> Leaves:
    xg, g3 = _parts(layer, a, g)
    w3 = w.view(-1, 1, 1)
    return _leaves(layer, (w3 * xg).sum((0, 1)), (w3 * g3).sum((0, 1)))
