"""nn.Conv2d, any kernel, stride, padding, dilation, bias (groups = 1, zero padding; other instances fall back).

  grad    dW_b = sum_p g_b[p] im2col(a_b)[p]^T as ONE grouped convolution weight-gradient (groups = B: the
          samples stacked as channels, each input paired only with its own cotangents). oneDNN runs it ~2.4x
          faster than ``F.unfold`` + ``bmm`` (seed conv2 at B=256, 1 thread: 53 vs 127 ms);  db_b = sum_p g_b[p];
  norm    per layer, by ``norm_rule`` (Bu, Mao & Xu 2022's mixed ghost norm): "gram" =
          sum_{p,q} <u_p,u_q><g_p,g_q> over output positions (u_p = the unfolded input patch, d = C_in k k
          values), ~P^2 (d + C_out) per example; "materialize" = the grad above and its norm, ~P d C_out.
          ``gram_is_cheaper`` picks (with the conv slack below); measured on the seed CNN (float32, 1 thread,
          the norm alone, min of 7, ms at B=64 / 256, 2-core CPU shared with other jobs):
            conv1 (P=676, d=9, C_out=32; model: gram 96x dearer)    materialize 1.7 / 9.5    gram  88 / 360
            conv2 (P=576, d=288, C_out=64; model: gram 11x dearer)  materialize 18.7 / 69    gram 172 / 770
          (one ordinary batched weight-gradient, what SGD pays: conv1 1.0 / 7.0, conv2 13.5 / 54), so the model
          ranks both as measured. Every workload's conv layers (scripts/conv_cost_model.py, both frameworks,
          B = 16 / 64 / 256: paper/cpu-costmodel/) put the crossover at P (d + p) / (d p) between 1.61 and 4.44,
          hence ``norm_route("conv", P, d, p)`` with ``CONV_GRAM_SLACK = 2.5`` (``contract.cost_model`` states the numbers): on
          cifar10_cnn gram for conv5-conv8 (8x8 and 4x4 maps), materialise for the rest; mnist_cnn conv2 gram.
  sum     (gram layers only; materialised ones are summed from their per-example grads by the engine): one
          ordinary weight-gradient of the w-scaled cotangents.
``contract.cost_model.forced_routes(conv=...)`` forces one rule for every conv layer (tests, measurements).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from contract.cost_model import norm_route
from torch_impl.rules import Leaves, register_clipped_sum, register_grad_sampler, register_norm_sampler, sq

Tensor = torch.Tensor


def _geometry(layer: nn.Conv2d) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]] | None:
    """(stride, padding, dilation) as pairs, or None when the rule does not cover this instance."""
    if layer.groups != 1 or layer.padding_mode != "zeros":
        return None
    pad = layer.padding
    if isinstance(pad, str):
        if pad == "valid":
            pad = (0, 0)
        else:  # "same": symmetric only when every dilated kernel extent is odd
            total = [d * (k - 1) for d, k in zip(layer.dilation, layer.kernel_size)]
            if any(t % 2 for t in total):
                return None
            pad = tuple(t // 2 for t in total)
    return tuple(layer.stride), tuple(pad), tuple(layer.dilation)


def _with_bias(layer: nn.Conv2d, weight: Tensor, bias: Tensor) -> Leaves:
    return {"weight": weight, "bias": bias} if layer.bias is not None else {"weight": weight}


def norm_rule(layer: nn.Conv2d, g: Tensor) -> str:
    """"gram" or "materialize" for this layer at output cotangent g (B, C_out, H', W')."""
    d = layer.in_channels * layer.kernel_size[0] * layer.kernel_size[1]
    return norm_route("conv", g.shape[2] * g.shape[3], d, g.shape[1])


@register_grad_sampler("conv", nn.Conv2d)
def conv_grad_sample(layer: nn.Conv2d, a: Tensor, g: Tensor) -> Leaves | None:
    """a: (B, C_in, H, W), g: (B, C_out, H', W') -> weight (B, C_out, C_in, kh, kw), bias (B, C_out)."""
    geometry = _geometry(layer)
    if geometry is None:
        return None
    stride, padding, dilation = geometry
    b, c_in, h, w = a.shape
    c_out = g.shape[1]
    weight = torch.nn.grad.conv2d_weight(
        a.reshape(1, b * c_in, h, w), (b * c_out, c_in, *layer.kernel_size), g.reshape(1, b * c_out, *g.shape[2:]),
        stride=stride, padding=padding, dilation=dilation, groups=b,
    )
    return _with_bias(layer, weight.view(b, c_out, c_in, *layer.kernel_size), g.sum(dim=(2, 3)))


def gram_norm_sq(layer: nn.Conv2d, a: Tensor, g: Tensor) -> Tensor:
    """(B,) ||dW_b||^2 (+ ||db_b||^2) = sum_{p,q} <u_p, u_q> <g_p, g_q> (a unfolded to (B, C_in k k, P))."""
    stride, padding, dilation = _geometry(layer)
    cols = F.unfold(a, layer.kernel_size, dilation=dilation, padding=padding, stride=stride)
    gg = g.flatten(2)
    out = (torch.bmm(cols.transpose(1, 2), cols) * torch.bmm(gg.transpose(1, 2), gg)).sum(dim=(1, 2))
    return out + sq(g.sum(dim=(2, 3))) if layer.bias is not None else out


@register_norm_sampler("conv", nn.Conv2d)
def conv_norm_sq(layer: nn.Conv2d, a: Tensor, g: Tensor) -> Tensor | None:
    if _geometry(layer) is None or norm_rule(layer, g) == "materialize":
        return None
    return gram_norm_sq(layer, a, g)


@register_clipped_sum("conv", nn.Conv2d)
def conv_clipped_sum(layer: nn.Conv2d, a: Tensor, g: Tensor, w: Tensor) -> Leaves:
    stride, padding, dilation = _geometry(layer)
    gc = g * w.view(-1, 1, 1, 1)
    weight = torch.nn.grad.conv2d_weight(a, layer.weight.shape, gc, stride=stride, padding=padding,
                                         dilation=dilation)
    return _with_bias(layer, weight, gc.sum(dim=(0, 2, 3)))
