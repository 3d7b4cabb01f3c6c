"""ffnn: fast-dpsgd's feed-forward network on 104 features: Linear(104, 50), ReLU, Linear(50, 2)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class FFNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(104, 50)
        self.fc2 = nn.Linear(50, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 104) float -> logits (B, 2)."""
        return self.fc2(F.relu(self.fc1(x)))
