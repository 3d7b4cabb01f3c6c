"""embed: fast-dpsgd's IMDb embedding model: Embedding(10004, 16), mean over 256 positions, Linear(16, 2)."""
from __future__ import annotations

import torch
import torch.nn as nn


class EmbedNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(10004, 16)
        self.fc = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 256) int64 token ids -> logits (B, 2)."""
        return self.fc(self.embedding(x).mean(dim=1))
