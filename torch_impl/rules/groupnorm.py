"""nn.GroupNorm (affine) on (B, C, *spatial) inputs (mirrors ``jax_impl.rules.groupnorm``; Opacus'
``grad_sample/group_norm.py`` is the same rule).

With x^ = (a - mean) / sqrt(var + eps), mean and (biased) var per example over each group's C/G channels and all
positions (recomputed from the layer input a: the rule needs no parameter), y = x^ * weight + bias per channel:
  grad    weight_b = sum_p x^_bp * g_bp,  bias_b = sum_p g_bp   over the positions p   ((B, C) each)
  norm    ||weight_b||^2 + ||bias_b||^2 of those (B x C values: nothing cheaper to avoid)
  sum     weight = sum_{b,p} w_b x^_bp * g_bp,  bias = sum_{b,p} w_b g_bp.
An instance without affine parameters owns none (no site). LayerNorm's rule (``rules/layernorm.py``) is the
same with one group over the last axis.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from torch_impl.rules import Leaves, register_clipped_sum, register_grad_sampler, register_norm_sampler, sq

Tensor = torch.Tensor


def _parts(layer: nn.GroupNorm, a: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
    """(x^ * g, g), both (B, C, P) with the P positions (every axis after the channels) flattened."""
    b, c = a.shape[:2]
    groups = a.reshape(b, layer.num_groups, -1)
    mean = groups.mean(-1, keepdim=True)
    var = (groups - mean).square().mean(-1, keepdim=True)
    xhat = ((groups - mean) * torch.rsqrt(var + layer.eps)).reshape(b, c, -1)
    g3 = g.reshape(b, c, -1)
    return xhat * g3, g3


@register_grad_sampler("groupnorm", nn.GroupNorm)
def groupnorm_grad_sample(layer: nn.GroupNorm, a: Tensor, g: Tensor) -> Leaves:
    """weight, bias: (B, C)."""
    xg, g3 = _parts(layer, a, g)
    return {"weight": xg.sum(-1), "bias": g3.sum(-1)}


@register_norm_sampler("groupnorm", nn.GroupNorm)
def groupnorm_norm_sq(layer: nn.GroupNorm, a: Tensor, g: Tensor) -> Tensor:
    return sum(sq(v) for v in groupnorm_grad_sample(layer, a, g).values())


@register_clipped_sum("groupnorm", nn.GroupNorm)
def groupnorm_clipped_sum(layer: nn.GroupNorm, a: Tensor, g: Tensor, w: Tensor) -> Leaves:
    xg, g3 = _parts(layer, a, g)
    w3 = w.view(-1, 1, 1)
    return {"weight": (w3 * xg).sum((0, 2)), "bias": (w3 * g3).sum((0, 2))}
