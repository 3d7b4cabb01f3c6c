"""lstm: Embedding(10004, 100), LSTM(100, 100), mean over positions, Linear(100, 2) (mirrors
``torch_impl.models.lstm``).

The LSTM is a hand-written scan cell (``LSTM``), not ``nnx.LSTMCell`` / ``nnx.OptimizedLSTMCell`` + ``nnx.RNN``:
flax 0.12's cells have ONE bias (on the hidden-side Dense: "input and recurrent layers are summed so only one
needs a bias"), so PyTorch's two bias vectors could be loaded (as their sum) but not written back, and
``LSTMCell`` splits each weight into four per-gate Linear modules (``ii``, ``if_``, ..., ``ho``), which is not a
per-leaf permutation of the canonical weight. ``OptimizedLSTMCell``'s gate order (i, f, g, o) and fused
(in, 4H) kernels are PyTorch's; the cell here keeps them and adds the second bias:
  kernel_ih (in, 4H) = weight_ih_l0^T,  kernel_hh (H, 4H) = weight_hh_l0^T,  bias_ih = bias_ih_l0,
  bias_hh = bias_hh_l0   (``jax_impl.weights.KIND_LAYOUTS[LSTM]``).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jax_impl.models.common import PRECISION


def recurrence(pre: jax.Array, kernel_hh: jax.Array) -> jax.Array:
    """Hidden states (B, T, H) from the input pre-activations ``pre`` = x kernel_ih + bias_ih + bias_hh
    (B, T, 4H), zero initial state: z_t = pre_t + h_{t-1} kernel_hh; i, f, g, o = sigma, sigma, tanh, sigma of
    its quarters (PyTorch's order); c_t = f c_{t-1} + i g; h_t = o tanh(c_t). One ``lax.scan`` over T."""
    b, _, four_h = pre.shape
    hidden = four_h // 4

    def step(carry: tuple[jax.Array, jax.Array], pre_t: jax.Array) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
        c, h = carry
        z = pre_t + jnp.matmul(h, kernel_hh, precision=PRECISION)
        i, f, g, o = jnp.split(z, 4, axis=1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (c, h), h

    zeros = jnp.zeros((b, hidden), pre.dtype)
    _, hs = jax.lax.scan(step, (zeros, zeros), jnp.swapaxes(pre, 0, 1))
    return jnp.swapaxes(hs, 0, 1)


class LSTM(nnx.Module):
    """One-layer batch-first LSTM with PyTorch's two biases; (B, T, in) -> (B, T, H)."""

    def __init__(self, in_features: int, hidden_features: int, *, rngs: nnx.Rngs) -> None:
        bound = 1.0 / hidden_features ** 0.5  # nn.LSTM's U(-1/sqrt(H), 1/sqrt(H)) (shared weights come from torch)
        uniform = lambda *shape: jax.random.uniform(rngs.params(), shape, jnp.float32, -bound, bound)  # noqa: E731
        self.in_features, self.hidden_features = in_features, hidden_features
        self.kernel_ih = nnx.Param(uniform(in_features, 4 * hidden_features))
        self.kernel_hh = nnx.Param(uniform(hidden_features, 4 * hidden_features))
        self.bias_ih = nnx.Param(uniform(4 * hidden_features))
        self.bias_hh = nnx.Param(uniform(4 * hidden_features))

    def pre_activations(self, x: jax.Array) -> jax.Array:
        """(B, T, 4H) = x kernel_ih + bias_ih + bias_hh."""
        bias = (self.bias_ih[...] + self.bias_hh[...]).reshape(1, 1, -1)  # explicit rank: promotion raises
        return jnp.einsum("btd,dg->btg", x, self.kernel_ih[...], precision=PRECISION) + bias

    def __call__(self, x: jax.Array) -> jax.Array:
        return recurrence(self.pre_activations(x), self.kernel_hh[...])


class LSTMNet(nnx.Module):
    def __init__(self, vocab: int = 10004, embed: int = 100, hidden: int = 100, classes: int = 2, *,
                 rngs: nnx.Rngs) -> None:
        self.embedding = nnx.Embed(vocab, embed, rngs=rngs)
        self.embedding.dtype = None  # compute in the parameters' dtype (see jax_impl.models.embed)
        self.lstm = LSTM(embed, hidden, rngs=rngs)
        self.fc = nnx.Linear(hidden, classes, precision=PRECISION, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (B, T) int token ids (T = 256 for the workload) -> logits (B, 2)."""
        return self.fc(self.lstm(self.embedding(x)).mean(axis=1))
