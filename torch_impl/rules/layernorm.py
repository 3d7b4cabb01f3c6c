"""nn.LayerNorm (one normalised axis, the last; elementwise affine) on (B, d) or (B, T..., d) inputs (mirrors
``jax_impl.rules.layernorm``).

x^ = (a - mean) / sqrt(var + eps) over the last axis; the rules are the normalisation kinds'
(``rules/normalization.py``) over the T... positions ((B, d) values per leaf: always cheaper than any Gram form).
Other instances (no affine, a multi-axis ``normalized_shape``) return None: the fallback materialises them.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from torch_impl.rules.normalization import register_affine_normalization

Tensor = torch.Tensor


def _covered(layer: nn.LayerNorm) -> bool:
    return len(layer.normalized_shape) == 1 and layer.elementwise_affine


def _parts(layer: nn.LayerNorm, a: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
    """(x^ * g, g), both (B, N, d) with every axis between batch and features flattened to N positions."""
    a3, g3 = a.reshape(a.shape[0], -1, a.shape[-1]), g.reshape(g.shape[0], -1, g.shape[-1])
    mean = a3.mean(-1, keepdim=True)
    var = (a3 - mean).square().mean(-1, keepdim=True)
    return (a3 - mean) * torch.rsqrt(var + layer.eps) * g3, g3


layernorm_grad_sample, layernorm_norm_sq, layernorm_clipped_sum = register_affine_normalization(
    "layernorm", nn.LayerNorm, _parts, positions=1, covered=_covered)
