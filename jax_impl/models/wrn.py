"""wrn16_4: WRN-16-4 with GroupNorm (mirrors ``torch_impl.models.wrn``: same attribute names, so the module paths
are the canonical ``state_dict`` prefixes, e.g. ``layer2.0.shortcut``). Convolutions run NHWC; GroupNorm
(``nnx.GroupNorm``, channels last, statistics over height, width and each group's C / 16 channels) matches torch's: 16 groups of consecutive channels, epsilon 1e-5, two-pass variance. Layouts: conv kernels HWIO,
GroupNorm scale <- weight (``jax_impl.rules.conv`` / ``jax_impl.rules.groupnorm``).
"""
from __future__ import annotations

import jax
from flax import nnx

from jax_impl.models.common import PRECISION, nhwc, relu
from jax_impl.precision import promote_conv, promote_linear

GROUPS = 16
STAGES = ((64, 1), (128, 2), (256, 2))  # (width, stride of the first block) of layer1, layer2, layer3
BLOCKS = 2
STEM, CLASSES = 16, 10


def group_norm(channels: int, rngs: nnx.Rngs) -> nnx.GroupNorm:
    """torch's nn.GroupNorm(16, channels): epsilon 1e-5, the two-pass variance E[(x - mean)^2]."""
    return nnx.GroupNorm(channels, num_groups=GROUPS, epsilon=1e-5, use_fast_variance=False, rngs=rngs)


def conv(c_in: int, c_out: int, k: int, stride: int, rngs: nnx.Rngs) -> nnx.Conv:
    """torch's Conv2d(c_in, c_out, k, stride, padding=k // 2, bias=False)."""
    return nnx.Conv(c_in, c_out, (k, k), strides=stride, padding=k // 2, use_bias=False, precision=PRECISION,
                    promote_dtype=promote_conv,
                    rngs=rngs)


class Block(nnx.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, *, rngs: nnx.Rngs) -> None:
        self.gn1 = group_norm(c_in, rngs)
        self.conv1 = conv(c_in, c_out, 3, stride, rngs)
        self.gn2 = group_norm(c_out, rngs)
        self.conv2 = conv(c_out, c_out, 3, 1, rngs)
        self.shortcut = conv(c_in, c_out, 1, stride, rngs) if c_in != c_out or stride != 1 else None

    def __call__(self, x: jax.Array) -> jax.Array:
        o = relu(self.gn1(x))
        y = self.conv2(relu(self.gn2(self.conv1(o))))
        return y + (self.shortcut(o) if self.shortcut is not None else x)


class WRN(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs) -> None:
        self.conv0 = conv(3, STEM, 3, 1, rngs)
        c_in = STEM
        for k, (width, stride) in enumerate(STAGES, 1):
            blocks = [Block(c_in if i == 0 else width, width, stride if i == 0 else 1, rngs=rngs) for i in range(BLOCKS)]
            setattr(self, f"layer{k}", nnx.List(blocks))
            c_in = width
        self.gn = group_norm(c_in, rngs)
        self.fc = nnx.Linear(c_in, CLASSES, precision=PRECISION, promote_dtype=promote_linear, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (B, 3, 32, 32) NCHW -> logits (B, 10)."""
        h = self.conv0(nhwc(x))
        for stage in (self.layer1, self.layer2, self.layer3):
            for block in stage:
                h = block(h)
        return self.fc(relu(self.gn(h)).mean(axis=(1, 2)))
