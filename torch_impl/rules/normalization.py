"""What the normalisation kinds share (``layernorm``, ``groupnorm``; no kind of its own; mirrors
``jax_impl.rules.normalization``).

y = x^ * weight + bias per channel, with x^ recomputed from the layer input a (the rules need no parameter), so
per example
  grad    weight_b = sum_p x^_bp g_bp,  bias_b = sum_p g_bp   over the positions p   ((B, C) each)
  norm    ||weight_b||^2 + ||bias_b||^2 of those (B x C values: nothing cheaper to avoid)
  sum     weight = sum_{b,p} w_b x^_bp g_bp,  bias = sum_{b,p} w_b g_bp.
A kind's file gives how it normalises (``parts``: x^ g and g with the positions on one axis) and which instances
its rule covers; ``register_affine_normalization`` registers the three rules.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from torch_impl.rules import Leaves, register_clipped_sum, register_grad_sampler, register_norm_sampler, sq

Tensor = torch.Tensor
Parts = Callable[[nn.Module, Tensor, Tensor], tuple[Tensor, Tensor]]


def _leaves(layer: nn.Module, weight: Tensor, bias: Tensor) -> Leaves:
    return {"weight": weight, "bias": bias} if layer.bias is not None else {"weight": weight}


def register_affine_normalization(kind: str, layer_type: type[nn.Module], parts: Parts, positions: int,
                                  covered: Callable[[nn.Module], bool] = lambda layer: True
                                  ) -> tuple[Callable, Callable, Callable]:
    """Registers ``kind``'s grad sampler, norm sampler and clipped sum for ``layer_type`` and returns them.
    parts(layer, a, g) -> (x^ * g, g), both (B, ...) with the positions on axis ``positions`` and the channels on
    the other; ``covered(layer)``: False -> the rules return None and the fallback materialises the layer."""

    @register_grad_sampler(kind, layer_type)
    def grad_sample(layer: nn.Module, a: Tensor, g: Tensor) -> Leaves | None:
        if not covered(layer):
            return None
        xg, g3 = parts(layer, a, g)
        return _leaves(layer, xg.sum(positions), g3.sum(positions))

    @register_norm_sampler(kind, layer_type)
    def norm_sq(layer: nn.Module, a: Tensor, g: Tensor) -> Tensor | None:
        grads = grad_sample(layer, a, g)
        return None if grads is None else sum(sq(v) for v in grads.values())

    @register_clipped_sum(kind, layer_type)
    def clipped_sum(layer: nn.Module, a: Tensor, g: Tensor, w: Tensor) -> Leaves:
        xg, g3 = parts(layer, a, g)
        wb = w.view(-1, *(1,) * (xg.dim() - 1))
        return _leaves(layer, (wb * xg).sum((0, positions)), (wb * g3).sum((0, positions)))

    return grad_sample, norm_sq, clipped_sum
