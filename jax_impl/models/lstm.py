"""lstm: Embedding(10004, 100), LSTM(100, 100), mean over positions, Linear(100, 2) (mirrors
``torch_impl.models.lstm``).

The LSTM is a hand-written scan cell (``jax_impl.layers.LSTM``), not ``nnx.LSTMCell`` / ``nnx.OptimizedLSTMCell`` + ``nnx.RNN``:
flax 0.12's cells have ONE bias (on the hidden-side Dense: "input and recurrent layers are summed so only one
needs a bias"), so PyTorch's two bias vectors could be loaded (as their sum) but not written back, and
``LSTMCell`` splits each weight into four per-gate Linear modules (``ii``, ``if_``, ..., ``ho``), which is not a
per-leaf permutation of the canonical weight. ``OptimizedLSTMCell``'s gate order (i, f, g, o) and fused
(in, 4H) kernels are PyTorch's; the cell here keeps them and adds the second bias:
  kernel_ih (in, 4H) = weight_ih_l0^T,  kernel_hh (H, 4H) = weight_hh_l0^T,  bias_ih = bias_ih_l0,
  bias_hh = bias_hh_l0   (its layout: ``jax_impl.rules.lstm``).
"""
from __future__ import annotations

import jax
from flax import nnx

from jax_impl.layers import LSTM, PRECISION, recurrence  # noqa: F401 - re-exported (tests and scripts)
from jax_impl.precision import promote_linear


class LSTMNet(nnx.Module):
    def __init__(self, vocab: int = 10004, embed: int = 100, hidden: int = 100, classes: int = 2, *,
                 rngs: nnx.Rngs) -> None:
        self.embedding = nnx.Embed(vocab, embed, rngs=rngs)
        self.embedding.dtype = None  # compute in the parameters' dtype (see jax_impl.models.embed)
        self.lstm = LSTM(embed, hidden, rngs=rngs)
        self.fc = nnx.Linear(hidden, classes, precision=PRECISION, promote_dtype=promote_linear, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (B, T) int token ids (T = 256 for the workload) -> logits (B, 2)."""
        return self.fc(self.lstm(self.embedding(x)).mean(axis=1))
