"""wrn16_4: WRN-16-4 with GroupNorm for CIFAR-10, the network DP image classification trains (De, Berrada, Hayes,
Smith & Balle 2022, "Unlocking high-accuracy differentially private image classification through scale";
jax-privacy's image configs): 2,748,890 parameters.

conv0 3x3 (3 -> 16, no bias); three groups ``layer1`` / ``layer2`` / ``layer3`` of two pre-activation blocks of
widths 64 / 128 / 256, strides 1 / 2 / 2; head GroupNorm, ReLU, mean over height and width, ``fc`` Linear(256, 10).
Block(in, out, stride): ``o = relu(gn1(x)); y = conv2(relu(gn2(conv1(o)))); y + (shortcut(o) or x)``, every
GroupNorm 16 groups (eps 1e-5, affine), every conv without bias, ``shortcut`` a 1x1 conv only where the shape
changes. No batch norm: each example is normalised on its own, as DP-SGD needs.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

GROUPS = 16
STAGES = ((64, 1), (128, 2), (256, 2))  # (width, stride of the first block) of layer1, layer2, layer3
BLOCKS = 2  # per stage
STEM, CLASSES = 16, 10


class Block(nn.Module):
    """Pre-activation residual block; submodules declared in state_dict order (gn1, conv1, gn2, conv2, shortcut)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.gn1 = nn.GroupNorm(GROUPS, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, padding=1, bias=False)
        self.gn2 = nn.GroupNorm(GROUPS, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, padding=1, bias=False)
        self.shortcut = nn.Conv2d(c_in, c_out, 1, stride, bias=False) if c_in != c_out or stride != 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = F.relu(self.gn1(x))
        y = self.conv2(F.relu(self.gn2(self.conv1(o))))
        return y + (self.shortcut(o) if self.shortcut is not None else x)


class WRN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(3, STEM, 3, padding=1, bias=False)
        c_in = STEM
        for k, (width, stride) in enumerate(STAGES, 1):
            blocks = [Block(c_in if i == 0 else width, width, stride if i == 0 else 1) for i in range(BLOCKS)]
            setattr(self, f"layer{k}", nn.Sequential(*blocks))
            c_in = width
        self.gn = nn.GroupNorm(GROUPS, c_in)
        self.fc = nn.Linear(c_in, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, 32, 32) NCHW -> logits (B, 10)."""
        h = self.layer3(self.layer2(self.layer1(self.conv0(x))))
        return self.fc(F.relu(self.gn(h)).mean(dim=(2, 3)))
