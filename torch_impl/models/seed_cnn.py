"""seed_cnn: the seed tutorial's CNN (1,199,882 parameters, 98% of them in fc1)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class SimpleCNN(nn.Module):
    """conv 1->32 k3, relu, conv 32->64 k3, relu, max-pool 2, flatten (C,H,W), fc 9216->128, relu, fc 128->10."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 1, 28, 28) NCHW -> logits (B, 10)."""
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = torch.flatten(x, 1)  # (C, H, W) order: the canonical fc1 input order
        x = F.relu(self.fc1(x))
        return self.fc2(x)
