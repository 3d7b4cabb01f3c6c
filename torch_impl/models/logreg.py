"""logreg: fast-dpsgd's logistic regression on 104 (Adult) features, as a 2-class softmax: Linear(104, 2)."""
from __future__ import annotations

import torch
import torch.nn as nn


class LogReg(nn.Module):
    """Two logits, so the softmax cross-entropy of the other workloads applies (the peer's sigmoid + BCE on one
    logit is the same model up to a reparametrisation; one loss everywhere keeps the methods comparable)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(104, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 104) float -> logits (B, 2)."""
        return self.fc(x)
