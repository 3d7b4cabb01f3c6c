"""nn.GroupNorm (affine) on (B, C, *spatial) inputs (mirrors ``jax_impl.rules.groupnorm``; Opacus'
``grad_sample/group_norm.py`` is the same rule).

x^ = (a - mean) / sqrt(var + eps), mean and (biased) var per example over each group's C/G channels and all
positions; the rules are the normalisation kinds' (``rules/normalization.py``) over every position. An instance
without affine parameters owns none (no site). LayerNorm's rule (``rules/layernorm.py``) is the same with one
group over the last axis.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from torch_impl.rules.normalization import register_affine_normalization

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


# weight, bias: (B, C)
groupnorm_grad_sample, groupnorm_norm_sq, groupnorm_clipped_sum = register_affine_normalization(
    "groupnorm", nn.GroupNorm, _parts, positions=-1)
