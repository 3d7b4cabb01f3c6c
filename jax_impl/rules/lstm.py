"""The LSTM (``jax_impl.layers.LSTM``: kernels (in, 4H) / (H, 4H), gates i, f, g, o, two biases); mirrors
``torch_impl.rules.lstm`` (the formulas and the cost model are stated there).

  grad    kernel_ih_b = sum_t x_bt dz_bt^T, kernel_hh_b = sum_t h_b,t-1 dz_bt^T, bias_ih_b = bias_hh_b = sum_t dz_bt;
  norm    Gram form sum_{t,s} (<x_t,x_s> + <h_t-1,h_s-1>) <dz_t,dz_s> + 2 ||sum_t dz_t||^2 when
          ``gram_is_cheaper(T, in + H, 4H)``, else None (materialise; the workload at T = 256 does);
  sum     (Gram route) kernels x^T (w dz) and h_prev^T (w dz) over examples and positions, biases sum of w dz.
dz (B, T, 4H), the gate pre-activations' cotangents, come from ``jax.vjp`` of the layer's own recurrence (the
scan) at the recomputed pre-activations, pulled back from the output cotangent g: one extra forward + backward
scan of this layer (the rules see its input and output cotangent only). The layer here is merged with the
parameters (``per_layer.layers``), so the rule reads its kernels directly.
Layout: kernel_ih (in, 4H) <- weight_ih_l0 (4H, in) and kernel_hh (H, 4H) <- weight_hh_l0 (4H, H) transposed,
bias_ih / bias_hh <- bias_ih_l0 / bias_hh_l0 unchanged. Gate blocks stay in PyTorch's order (i, f, g, o) along the
4H axis on both sides: no reordering, and the two biases stay two leaves (tests/test_lstm.py pins this with
weights that tell the gates and biases apart).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from contract.cost_model import norm_route
from jax_impl.layers import LSTM, PRECISION, recurrence
from jax_impl.rules import (Leaves, register_clipped_sum, register_grad_sampler, register_layout,
                            register_norm_sampler, sq)

register_layout({"kernel_ih": ("weight_ih_l0", (1, 0)), "kernel_hh": ("weight_hh_l0", (1, 0)),
                 "bias_ih": ("bias_ih_l0", None), "bias_hh": ("bias_hh_l0", None)}, LSTM)

def gate_cotangents(layer: LSTM, a: jax.Array, g: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(dz (B, T, 4H), h_prev (B, T, H)) from the layer's input a (B, T, in) and output cotangent g (B, T, H)."""
    kernel_hh = layer.kernel_hh[...]
    h, pullback = jax.vjp(lambda pre: recurrence(pre, kernel_hh), layer.pre_activations(a))
    (dz,) = pullback(g)
    return dz, jnp.concatenate([jnp.zeros_like(h[:, :1]), h[:, :-1]], axis=1)


def norm_rule(layer: LSTM, a: jax.Array) -> str:
    """"gram" or "materialize" for this layer at input a (B, T, in)."""
    hidden = layer.hidden_features
    return norm_route("lstm", a.shape[1], layer.in_features + hidden, 4 * hidden)


@register_grad_sampler("lstm", LSTM)
def lstm_grad_sample(layer: LSTM, a: jax.Array, g: jax.Array) -> Leaves:
    """kernel_ih (B, in, 4H), kernel_hh (B, H, 4H), bias_ih = bias_hh (B, 4H)."""
    dz, h_prev = gate_cotangents(layer, a, g)
    db = dz.sum(axis=1)
    return {"kernel_ih": jnp.einsum("btd,btg->bdg", a, dz, precision=PRECISION),
            "kernel_hh": jnp.einsum("btd,btg->bdg", h_prev, dz, precision=PRECISION), "bias_ih": db, "bias_hh": db}


@register_norm_sampler("lstm", LSTM)
def lstm_norm_sq(layer: LSTM, a: jax.Array, g: jax.Array) -> jax.Array | None:
    if norm_rule(layer, a) == "materialize":
        return None
    dz, h_prev = gate_cotangents(layer, a, g)
    gram = lambda v: jnp.einsum("btd,bsd->bts", v, v, precision=PRECISION)  # noqa: E731
    return ((gram(a) + gram(h_prev)) * gram(dz)).sum(axis=(1, 2)) + 2.0 * sq(dz.sum(axis=1))


@register_clipped_sum("lstm", LSTM)
def lstm_clipped_sum(layer: LSTM, a: jax.Array, g: jax.Array, w: jax.Array) -> Leaves:
    dz, h_prev = gate_cotangents(layer, a, g * w.reshape(-1, 1, 1))  # linear in g: = w_b dz_b
    dz = dz.reshape(-1, dz.shape[-1])
    db = dz.sum(axis=0)
    flat = lambda v: v.reshape(-1, v.shape[-1]).T  # noqa: E731
    return {"kernel_ih": jnp.matmul(flat(a), dz, precision=PRECISION),
            "kernel_hh": jnp.matmul(flat(h_prev), dz, precision=PRECISION), "bias_ih": db, "bias_hh": db}
