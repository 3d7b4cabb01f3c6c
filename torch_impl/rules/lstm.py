"""The LSTM (``torch_impl.layers.LSTM``: nn.LSTM's parameters, gate order i, f, g, o, two biases).

The layer's parameters act through its gate pre-activations z_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh, i.e. one
linear map [W_ih W_hh] (4H x (in + H)) of u_t = [x_t; h_{t-1}] (h_{-1} = 0) at T positions, plus both biases.
So with dz_t = d(sum of per-example losses)/dz_t (B, T, 4H):
  grad    [dW_ih dW_hh]_b = sum_t dz_bt u_bt^T (one bmm), db_ih_b = db_hh_b = sum_t dz_bt;
  norm    the Gram form sum_{t,s} <u_t,u_s> <dz_t,dz_s> + 2 ||sum_t dz_t||^2, ~T^2 (in + H + 4H) per example, when
          ``norm_route("lstm", T, in + H, 4H)`` says so (the linear layers' model, slack ``LSTM_GRAM_SLACK``); else
          None: the layer is materialised (grad above, then its norm). The workload (T = 256, in = H = 100)
          materialises: 256 * 600 > 200 * 400; T <= 133 would take the Gram form;
  sum     [W_ih W_hh] = (w dz)^T u over all examples and positions (one matmul), biases sum of w dz.
Where (u, dz) come from: the layer is recorded at its ``GateInput`` child, the input projection
pre_t = W_ih x_t + b_ih + b_hh, whose output cotangent IS dz_t (z_t = pre_t + W_hh h_{t-1}), from the model's own
backward; the recorded input x is completed to u = [x; h shifted by one step] from the layer's output when its call
returns (``register_site_input``). So the rules see a = u (B, T, in + H), g = dz (B, T, 4H): nothing recomputed,
no recurrence run again, no parameter value read. The concatenation (B T (in + H) values) is written only while
the engine records, never in a plain forward.
``contract.cost_model.forced_routes(lstm=...)`` forces "gram" / "materialize" (tests).
"""
from __future__ import annotations

import torch

from contract.cost_model import norm_route
from torch_impl.layers import GateInput
from torch_impl.rules import (SITE_TYPES, Leaves, register_clipped_sum, register_grad_sampler, register_norm_sampler,
                              register_site_input, sq)

Tensor = torch.Tensor
SITE_TYPES.add(GateInput)


@register_site_input(GateInput)
def step_inputs(x: Tensor, h: Tensor) -> Tensor:
    """u = [x_t; h_{t-1}] (B, T, in + H) from the layer's input x (B, T, in) and hidden states h (B, T, H)."""
    return torch.cat([x, torch.cat([h.new_zeros(h.shape[0], 1, h.shape[2]), h[:, :-1]], dim=1)], dim=2)


def norm_rule(layer: GateInput, a: Tensor, g: Tensor) -> str:
    """"gram" or "materialize" for this layer at u (B, T, in + H) and dz (B, T, 4H)."""
    return norm_route("lstm", a.shape[1], a.shape[2], g.shape[2])


def _parts(a: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
    """(x (B, T, in), h_prev (B, T, H)): views of u = a, split where W_ih's columns end (g: dz, 4H wide)."""
    d_in = a.shape[2] - g.shape[2] // 4
    return a[..., :d_in], a[..., d_in:]


def _leaves(layer: GateInput, w_ih: Tensor, w_hh: Tensor, bias: Tensor) -> Leaves:
    names = layer.applies  # weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0
    return dict(zip(names, (w_ih, w_hh, bias, bias.clone())))


@register_grad_sampler("lstm", GateInput)
def lstm_grad_sample(layer: GateInput, a: Tensor, g: Tensor) -> Leaves:
    """weight_ih_l0 (B, 4H, in), weight_hh_l0 (B, 4H, H), bias_ih_l0 = bias_hh_l0 (B, 4H); a = u, g = dz. One bmm
    per weight (each writes its own contiguous leaf; the views of u are read in place)."""
    x, h_prev = _parts(a, g)
    gt = g.transpose(1, 2)
    return _leaves(layer, torch.bmm(gt, x), torch.bmm(gt, h_prev), g.sum(1))


@register_norm_sampler("lstm", GateInput)
def lstm_norm_sq(layer: GateInput, a: Tensor, g: Tensor) -> Tensor | None:
    if norm_rule(layer, a, g) == "materialize":
        return None
    gram = lambda v: torch.bmm(v, v.transpose(1, 2))  # noqa: E731
    return (gram(a) * gram(g)).sum(dim=(1, 2)) + 2.0 * sq(g.sum(1))


@register_clipped_sum("lstm", GateInput)
def lstm_clipped_sum(layer: GateInput, a: Tensor, g: Tensor, w: Tensor) -> Leaves:
    """[W_ih W_hh] = (w dz)^T u in one matmul over all examples and positions, split into the two weights."""
    d_in = _parts(a, g)[0].shape[2]
    gc = (g * w.view(-1, 1, 1)).reshape(-1, g.shape[2])
    both = gc.T @ a.reshape(-1, a.shape[2])
    return _leaves(layer, both[:, :d_in].contiguous(), both[:, d_in:].contiguous(), gc.sum(0))
