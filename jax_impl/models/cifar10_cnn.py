"""cifar10_cnn: every layer a 3x3 convolution (mirrors ``torch_impl.models.cifar10_cnn``)."""
from __future__ import annotations

import jax
from flax import nnx

from jax_impl.models.common import PRECISION, nhwc, relu
from jax_impl.precision import promote_conv

CHANNELS = ((3, 32), (32, 32), (32, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 10))
POOL_AFTER = (2, 4, 6)  # average-pool 2x2 after conv2, conv4, conv6


class Cifar10CNN(nnx.Module):
    """3x3 convs (padding 1) with relu: 32, 32, avg-pool, 64, 64, avg-pool, 128, 128, avg-pool, 256; then a
    3x3 conv to 10 (no relu) and the mean over positions."""

    def __init__(self, *, rngs: nnx.Rngs) -> None:
        for i, (c_in, c_out) in enumerate(CHANNELS, 1):
            setattr(self, f"conv{i}", nnx.Conv(c_in, c_out, (3, 3), padding=1, precision=PRECISION,
                                                promote_dtype=promote_conv, rngs=rngs))

    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (B, 3, 32, 32) NCHW -> logits (B, 10)."""
        x = nhwc(x)
        for i in range(1, len(CHANNELS)):
            x = relu(getattr(self, f"conv{i}")(x))
            if i in POOL_AFTER:
                x = nnx.avg_pool(x, (2, 2), strides=(2, 2))
        return getattr(self, f"conv{len(CHANNELS)}")(x).mean(axis=(1, 2))
