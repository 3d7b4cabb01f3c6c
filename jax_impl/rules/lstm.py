"""The LSTM (``jax_impl.layers.LSTM``: kernels (in, 4H) / (H, 4H), gates i, f, g, o, two biases); mirrors
``torch_impl.rules.lstm`` (the formulas, where (u, dz) come from and the cost model are stated there).

The kind is registered on the layer's ``GateInput`` child (the input projection x kernel_ih + bias_ih + bias_hh):
the engine probes that call, so g = dz (B, T, 4H), the gate pre-activations' cotangent from the model's own
backward, and completes its recorded input x to a = u = [x; h_prev] (B, T, in + H) from the layer's hidden states
(``register_site_input``). Nothing is recomputed and no parameter value is read:
  grad    kernel_ih_b = sum_t x_bt dz_bt^T, kernel_hh_b = sum_t h_b,t-1 dz_bt^T, bias_ih_b = bias_hh_b = sum_t dz_bt;
  norm    Gram form sum_{t,s} <u_t,u_s> <dz_t,dz_s> + 2 ||sum_t dz_t||^2 when ``norm_route("lstm", T, in + H, 4H)``
          says so, else None (materialise; the workload at T = 256 does);
  sum     [kernel_ih; kernel_hh] = u^T (w dz) over examples and positions (one matmul), biases sum of w dz.
Layout: kernel_ih (in, 4H) <- weight_ih_l0 (4H, in) and kernel_hh (H, 4H) <- weight_hh_l0 (4H, H) transposed,
bias_ih / bias_hh <- bias_ih_l0 / bias_hh_l0 unchanged. Gate blocks stay in PyTorch's order (i, f, g, o) along the
4H axis on both sides: no reordering, and the two biases stay two leaves (tests/test_lstm.py pins this with
weights that tell the gates and biases apart).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from contract.cost_model import norm_route
from jax_impl.layers import LSTM, PRECISION, GateInput
from jax_impl.precision import wide
from jax_impl.rules import (SITE_TYPES, Leaves, register_clipped_sum, register_grad_sampler, register_layout,
                            register_norm_sampler, register_site_input, sq)

SITE_TYPES.add(GateInput)
register_layout({"kernel_ih": ("weight_ih_l0", (1, 0)), "kernel_hh": ("weight_hh_l0", (1, 0)),
                 "bias_ih": ("bias_ih_l0", None), "bias_hh": ("bias_hh_l0", None)}, LSTM)


@register_site_input(GateInput)
def step_inputs(x: jax.Array, h: jax.Array) -> jax.Array:
    """u = [x_t; h_{t-1}] (B, T, in + H) from the layer's input x (B, T, in) and hidden states h (B, T, H)."""
    h_prev = jnp.concatenate([jnp.zeros_like(h[:, :1]), h[:, :-1]], axis=1)
    return jnp.concatenate([x.astype(h.dtype), h_prev], axis=2)


def norm_rule(layer: GateInput, a: jax.Array, g: jax.Array) -> str:
    """"gram" or "materialize" for this layer at u (B, T, in + H) and dz (B, T, 4H)."""
    return norm_route("lstm", a.shape[1], a.shape[2], g.shape[2])


def _split(a: jax.Array, g: jax.Array) -> int:
    """Where kernel_ih's rows end in u (= in): u is in + H wide, dz 4H."""
    return a.shape[2] - g.shape[2] // 4


def _leaves(layer: GateInput, both: jax.Array, bias: jax.Array, d_in: int) -> Leaves:
    """The four leaves from [kernel_ih; kernel_hh]'s gradient (..., in + H, 4H) and the (shared) bias gradient."""
    k_ih, k_hh, b_ih, b_hh = layer.applies
    return {k_ih: both[..., :d_in, :], k_hh: both[..., d_in:, :], b_ih: bias, b_hh: bias}


@register_grad_sampler("lstm", GateInput)
def lstm_grad_sample(layer: GateInput, a: jax.Array, g: jax.Array) -> Leaves:
    """kernel_ih (B, in, 4H), kernel_hh (B, H, 4H), bias_ih = bias_hh (B, 4H); a = u, g = dz. In bfloat16 u (whose
    h_prev is float32) is rounded to g's bfloat16 and the product accumulated in float32, as the model's own backward
    (``jax_impl.layers._mm``) and torch's autocast ``bmm`` compute it."""
    both = jnp.einsum("btd,btg->bdg", a.astype(g.dtype), g, precision=PRECISION,
                      preferred_element_type=wide(g.dtype, "dot")).astype(g.dtype)
    return _leaves(layer, both, g.sum(axis=1), _split(a, g))


@register_norm_sampler("lstm", GateInput)
def lstm_norm_sq(layer: GateInput, a: jax.Array, g: jax.Array) -> jax.Array | None:
    if norm_rule(layer, a, g) == "materialize":
        return None
    gram = lambda v: jnp.einsum("btd,bsd->bts", v, v, precision=PRECISION)  # noqa: E731
    return (gram(a) * gram(g)).sum(axis=(1, 2)) + 2.0 * sq(g.sum(axis=1))


@register_clipped_sum("lstm", GateInput)
def lstm_clipped_sum(layer: GateInput, a: jax.Array, g: jax.Array, w: jax.Array) -> Leaves:
    gc = (g * w.reshape(-1, 1, 1)).reshape(-1, g.shape[-1])
    both = jnp.matmul(a.reshape(-1, a.shape[-1]).T, gc, precision=PRECISION)
    return _leaves(layer, both, gc.sum(axis=0), _split(a, g))
