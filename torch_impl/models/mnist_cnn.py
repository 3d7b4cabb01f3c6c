"""mnist_cnn: TF-Privacy's MNIST CNN as fast-dpsgd runs it (26,010 parameters)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class MnistCNN(nn.Module):
    """conv 1->16 k8 s2 p3 (14x14), relu, max-pool 2 s1 (13x13), conv 16->32 k4 s2 (5x5), relu, max-pool 2 s1
    (4x4), flatten (C,H,W) 512, fc 512->32, relu, fc 32->10."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 8, stride=2, padding=3)
        self.conv2 = nn.Conv2d(16, 32, 4, stride=2)
        self.fc1 = nn.Linear(512, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 1, 28, 28) NCHW -> logits (B, 10)."""
        x = F.max_pool2d(F.relu(self.conv1(x)), 2, stride=1)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2, stride=1)
        x = torch.flatten(x, 1)
        return self.fc2(F.relu(self.fc1(x)))
