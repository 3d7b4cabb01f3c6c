"""nn.Linear: on (B, d) inputs (one position) and on (B, T..., d) inputs (a layer applied at T positions,
the sequence models' case: the per-example gradient sums over positions).

  grad    dW_b = sum_t g_bt a_bt^T (one bmm; T = 1: a batched outer product), db_b = sum_t g_bt;
  norm    T = 1: ||g_b||^2 (||a_b||^2 + 1) (rank one, Goodfellow 2015); T > 1: the Gram form
          sum_{t,s} <a_t,a_s><g_t,g_s> + ||sum_t g_t||^2 when ``gram_is_cheaper(T, d, p)``, else materialise;
  sum     W = (w g)^T a over all examples and positions (one matmul), bias = sum of w g.
Measured (seed fc1, float32, 1 thread, B=256): outer products via bmm / einsum / broadcast mul are within 10%
of each other; ``out=`` into fresh buffers gains nothing (the page faults move, not vanish).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from contract.cost_model import norm_route
from torch_impl.rules import Leaves, register_clipped_sum, register_grad_sampler, register_norm_sampler, sq

Tensor = torch.Tensor


def _positions(a: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
    """(B, T, d), (B, T, p): every axis between the batch and the features is a position."""
    return a.reshape(a.shape[0], -1, a.shape[-1]), g.reshape(g.shape[0], -1, g.shape[-1])


def _with_bias(layer: nn.Linear, weight: Tensor, bias: Tensor) -> Leaves:
    return {"weight": weight, "bias": bias} if layer.bias is not None else {"weight": weight}


def weight_grads(a: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
    """a: (B, [T...,] in), g: (B, [T...,] out) -> per-example (weight (B, out, in), bias (B, out)) of y = a W^T + b
    (also the "projection" kind's, ``rules.projection``)."""
    if a.dim() == 2:
        return torch.bmm(g.unsqueeze(2), a.unsqueeze(1)), g
    a3, g3 = _positions(a, g)
    return torch.bmm(g3.transpose(1, 2), a3), g3.sum(1)


def weight_norm_sq(a: Tensor, g: Tensor, bias: bool) -> Tensor | None:
    """(B,) squared norm of (weight, bias if ``bias``) per example, or None when materialising is cheaper."""
    if a.dim() == 2:
        gs = sq(g)
        return gs * (sq(a) + 1.0) if bias else gs * sq(a)
    a3, g3 = _positions(a, g)
    t = a3.shape[1]
    if norm_route("linear", t, a3.shape[2], g3.shape[2]) == "materialize":
        return None
    out = (torch.bmm(a3, a3.transpose(1, 2)) * torch.bmm(g3, g3.transpose(1, 2))).sum(dim=(1, 2))
    return out + sq(g3.sum(1)) if bias else out


def weight_clipped_sum(a: Tensor, g: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """(sum_b w_b weight_b, sum_b w_b bias_b) over all examples and positions: one matmul."""
    gc = (g * w.view(-1, *([1] * (g.dim() - 1)))).reshape(-1, g.shape[-1])
    return gc.T @ a.reshape(-1, a.shape[-1]), gc.sum(0)


@register_grad_sampler("linear", nn.Linear)
def linear_grad_sample(layer: nn.Linear, a: Tensor, g: Tensor) -> Leaves:
    """a: (B, [T...,] in), g: (B, [T...,] out) -> weight (B, out, in), bias (B, out)."""
    return _with_bias(layer, *weight_grads(a, g))


@register_norm_sampler("linear", nn.Linear)
def linear_norm_sq(layer: nn.Linear, a: Tensor, g: Tensor) -> Tensor | None:
    return weight_norm_sq(a, g, layer.bias is not None)


@register_clipped_sum("linear", nn.Linear)
def linear_clipped_sum(layer: nn.Linear, a: Tensor, g: Tensor, w: Tensor) -> Leaves:
    return _with_bias(layer, *weight_clipped_sum(a, g, w))
