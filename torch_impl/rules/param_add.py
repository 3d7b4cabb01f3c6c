"""Kind "param_add": a module whose forward ADDS its one parameter to its input, the parameter's shape being the
trailing shape of the (B, ...) activation (learned positions, ``torch_impl.layers.LearnedPositions``,
(T, d) added to (B, T, d)). Then y_b = a_b + P, so each example's gradient IS its output cotangent:
  grad    P_b = g_b;   norm  ||g_b||^2;   sum  sum_b w_b g_b.
No per-example work at all, where the fallback would vmap the layer's vjp (same numbers, more passes).
Why a kind and not a bare ``nn.Parameter`` on the model: the layers are found by forward hooks on modules that
own parameters (``per_layer``); a raw parameter of the root module would make the whole model one "layer",
materialised by the fallback (a vmap of the whole model's vjp, for one (T, d) table).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from torch_impl.layers import LearnedPositions
from torch_impl.rules import Leaves, register_clipped_sum, register_grad_sampler, register_norm_sampler, sq

Tensor = torch.Tensor


def _fits(layer: nn.Module, g: Tensor) -> bool:
    return tuple(g.shape[1:]) == tuple(layer.weight.shape)


@register_grad_sampler("param_add", LearnedPositions)
def param_add_grad_sample(layer: nn.Module, a: Tensor, g: Tensor) -> Leaves | None:
    return {"weight": g} if _fits(layer, g) else None


@register_norm_sampler("param_add", LearnedPositions)
def param_add_norm_sq(layer: nn.Module, a: Tensor, g: Tensor) -> Tensor | None:
    return sq(g) if _fits(layer, g) else None


@register_clipped_sum("param_add", LearnedPositions)
def param_add_clipped_sum(layer: nn.Module, a: Tensor, g: Tensor, w: Tensor) -> Leaves:
    return {"weight": torch.tensordot(w, g, dims=1)}
