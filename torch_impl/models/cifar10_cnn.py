"""cifar10_cnn: fast-dpsgd's CIFAR-10 CNN, every layer a 3x3 convolution (605,226 parameters)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

CHANNELS = ((3, 32), (32, 32), (32, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 10))
POOL_AFTER = (2, 4, 6)  # average-pool 2x2 after conv2, conv4, conv6


class Cifar10CNN(nn.Module):
    """conv 3->32, 32->32, avg-pool 2, 64, 64, avg-pool 2, 128, 128, avg-pool 2, 256 (each 3x3, stride 1,
    padding 1, relu), then conv 256->10 (3x3, padding 1, no relu) and the mean over the 4x4 positions."""

    def __init__(self) -> None:
        super().__init__()
        for i, (c_in, c_out) in enumerate(CHANNELS, 1):
            setattr(self, f"conv{i}", nn.Conv2d(c_in, c_out, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, 32, 32) NCHW -> logits (B, 10)."""
        for i in range(1, len(CHANNELS)):
            x = F.relu(getattr(self, f"conv{i}")(x))
            if i in POOL_AFTER:
                x = F.avg_pool2d(x, 2)
        return getattr(self, f"conv{len(CHANNELS)}")(x).mean(dim=(2, 3))
