"""lstm: fast-dpsgd's IMDb LSTM: Embedding(10004, 100), LSTM(100, 100), mean over the 256 positions' hidden
states, Linear(100, 2) (1,081,402 parameters).

The LSTM is ``torch_impl.layers.LSTM``, written out instead of ``nn.LSTM`` with nn.LSTM's parameter names,
shapes, gate order (i, f, g, o), two bias vectors and default init (same RNG draws: ``init_weights`` gives
nn.LSTM's weights), returning the hidden states alone. Why: ``nn.LSTM`` is one fused op (``aten::lstm``), and
``torch.func.vmap`` cannot batch it (torch 2.15: "Batching rule not implemented for aten::lstm.input. We could
not generate a fallback."; under ``grad`` the CPU kernel writes into an unbatched output, "output with shape
[1, 4H] doesn't match the broadcast shape [B, 1, 4H]"), so neither the vmap / compile methods nor a vmap
fallback of the layer would run on it. Written with visible ops, every torch.func method batches it, and the
per-layer rule (``torch_impl.rules.lstm``) gets the gate cotangents by differentiating the layer's own
recurrence (tests/test_lstm.py checks the forward against nn.LSTM loaded with the same state_dict).
Opacus users replace nn.LSTM by ``opacus.layers.DPLSTM`` (same state_dict names); ``opacus_equivalent`` is that
swap, used by the Opacus methods and peers (``torch_impl.opacus_methods.live_module``).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from torch_impl.layers import LSTM, recurrence  # noqa: F401 - re-exported (tests and scripts import them from here)


class LSTMNet(nn.Module):
    def __init__(self, vocab: int = 10004, embed: int = 100, hidden: int = 100, classes: int = 2) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, embed)
        self.lstm = LSTM(embed, hidden)
        self.fc = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T) int64 token ids (T = 256 for the workload) -> logits (B, 2)."""
        h = self.lstm(self.embedding(x))
        h = h[0] if isinstance(h, tuple) else h  # DPLSTM (Opacus' swap) returns (output, (h_n, c_n))
        return self.fc(h.mean(dim=1))
