"""The LSTM (``torch_impl.layers.LSTM``: nn.LSTM's parameters, gate order i, f, g, o, two biases).

The layer's parameters act through its gate pre-activations z_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh, so
with dz_t = d(sum of per-example losses)/dz_t (B, T, 4H) and h_{-1} = 0:
  grad    dW_ih_b = sum_t dz_bt x_bt^T,  dW_hh_b = sum_t dz_bt h_b,t-1^T  (one bmm each),
          db_ih_b = db_hh_b = sum_t dz_bt  (both bias vectors get the same gradient);
  norm    [W_ih W_hh] is one linear map of the concatenated input u_t = [x_t; h_{t-1}] (d = in + H) at T
          positions, so the Gram form is sum_{t,s} (<x_t,x_s> + <h_t-1,h_s-1>) <dz_t,dz_s> + 2 ||sum_t dz_t||^2,
          ~T^2 (in + H + 4H) per example, when ``gram_is_cheaper(T, in + H, 4H)`` (the linear layers' model, slack
          1); else None: the layer is materialised (grad above, then its norm). The workload (T = 256, in = H =
          100) materialises: 256 * 600 > 200 * 400; T <= 133 would take the Gram form;
  sum     (Gram route only) dz is linear in the output cotangent, so the clipped sum is W_ih = (w dz)^T x,
          W_hh = (w dz)^T h_prev over all examples and positions (one matmul each), biases sum of w dz.
Where dz comes from: the hooks see the layer's input x and output cotangent g = dL/dh_t (only the direct part:
h_t also feeds step t+1), not the gate cotangents inside the recurrence. ``gate_cotangents`` recomputes the
layer's forward from x (its weights: ``params``, the layer's own leaves, which the engine passes to this kind,
registered ``needs_params``) and backpropagates g through the recurrence alone (autograd, batched over
examples): one extra forward + backward of this layer, not of the model. Per-layer / materialising paths pay it once; ``bk`` on the Gram route twice (norm, then the
clipped sum), as the rules are stateless; the model's own backward is still one.
``contract.cost_model.forced_routes(lstm=...)`` forces "gram" / "materialize" (tests).
"""
from __future__ import annotations

import torch

from contract.cost_model import norm_route
from torch_impl.layers import LSTM, recurrence
from torch_impl.rules import Leaves, register_clipped_sum, register_grad_sampler, register_norm_sampler, sq

Tensor = torch.Tensor
NAMES = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")


def gate_cotangents(params: Leaves, a: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
    """(dz (B, T, 4H), h_prev (B, T, H)) from the layer's parameters {leaf: tensor}, its input a (B, T, in) and
    output cotangent g (B, T, H)."""
    w_ih, w_hh, b_ih, b_hh = (params[n].detach() for n in NAMES)
    with torch.enable_grad():
        pre = (torch.matmul(a, w_ih.t()) + (b_ih + b_hh)).requires_grad_(True)
        h = recurrence(pre, w_hh)
        (dz,) = torch.autograd.grad(h, pre, g)
    h = h.detach()
    return dz, torch.cat([torch.zeros_like(h[:, :1]), h[:, :-1]], dim=1)


def norm_rule(layer: LSTM, a: Tensor) -> str:
    """"gram" or "materialize" for this layer at input a (B, T, in)."""
    hidden = layer.hidden_size
    return norm_route("lstm", a.shape[1], layer.input_size + hidden, 4 * hidden)


@register_grad_sampler("lstm", LSTM, needs_params=True)
def lstm_grad_sample(layer: LSTM, a: Tensor, g: Tensor, *, params: Leaves) -> Leaves:
    """weight_ih_l0 (B, 4H, in), weight_hh_l0 (B, 4H, H), bias_ih_l0 = bias_hh_l0 (B, 4H)."""
    dz, h_prev = gate_cotangents(params, a, g)
    dzt = dz.transpose(1, 2)
    db = dz.sum(1)
    return {"weight_ih_l0": torch.bmm(dzt, a), "weight_hh_l0": torch.bmm(dzt, h_prev), "bias_ih_l0": db,
            "bias_hh_l0": db.clone()}


@register_norm_sampler("lstm", LSTM, needs_params=True)
def lstm_norm_sq(layer: LSTM, a: Tensor, g: Tensor, *, params: Leaves) -> Tensor | None:
    if norm_rule(layer, a) == "materialize":
        return None
    dz, h_prev = gate_cotangents(params, a, g)
    gram = lambda v: torch.bmm(v, v.transpose(1, 2))  # noqa: E731
    return ((gram(a) + gram(h_prev)) * gram(dz)).sum(dim=(1, 2)) + 2.0 * sq(dz.sum(1))


@register_clipped_sum("lstm", LSTM, needs_params=True)
def lstm_clipped_sum(layer: LSTM, a: Tensor, g: Tensor, w: Tensor, *, params: Leaves) -> Leaves:
    dz, h_prev = gate_cotangents(params, a, g * w.view(-1, 1, 1))  # linear in g: = w_b dz_b
    dz = dz.reshape(-1, dz.shape[-1])
    db = dz.sum(0)
    return {"weight_ih_l0": dz.T @ a.reshape(-1, a.shape[-1]), "weight_hh_l0": dz.T @ h_prev.reshape(-1, h_prev.shape[-1]),
            "bias_ih_l0": db, "bias_hh_l0": db.clone()}
