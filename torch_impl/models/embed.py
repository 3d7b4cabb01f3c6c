"""embed: fast-dpsgd's IMDb embedding model: Embedding(10004, 16), mean over 256 positions, Linear(16, 2)."""
from __future__ import annotations

import torch
import torch.nn as nn


class EmbedNet(nn.Module):
    """Defaults: the registered workload; other widths are variants (scripts/embed_cost_model.py)."""

    def __init__(self, vocab: int = 10004, width: int = 16, classes: int = 2) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, width)
        self.fc = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T) int64 token ids (T = 256 registered) -> logits (B, classes)."""
        return self.fc(self.embedding(x).mean(dim=1))
