"""mnist_cnn: TF-Privacy's MNIST CNN (mirrors ``torch_impl.models.mnist_cnn``)."""
from __future__ import annotations

import jax
from flax import nnx

from jax_impl.models.common import PRECISION, flatten_chw, max_pool, nhwc, relu
from jax_impl.precision import promote_conv, promote_linear


class MnistCNN(nnx.Module):
    """conv 1->16 k8 s2 p3, relu, max-pool 2 s1, conv 16->32 k4 s2, relu, max-pool 2 s1, flatten (C,H,W) 512,
    fc 512->32, relu, fc 32->10."""

    def __init__(self, *, rngs: nnx.Rngs) -> None:
        self.conv1 = nnx.Conv(1, 16, (8, 8), strides=2, padding=3, precision=PRECISION, promote_dtype=promote_conv,
                              rngs=rngs)
        self.conv2 = nnx.Conv(16, 32, (4, 4), strides=2, padding="VALID", precision=PRECISION,
                              promote_dtype=promote_conv, rngs=rngs)
        self.fc1 = nnx.Linear(512, 32, precision=PRECISION, promote_dtype=promote_linear, rngs=rngs)
        self.fc2 = nnx.Linear(32, 10, precision=PRECISION, promote_dtype=promote_linear, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (B, 1, 28, 28) NCHW -> logits (B, 10)."""
        x = max_pool(relu(self.conv1(nhwc(x))), (2, 2), strides=(1, 1))
        x = max_pool(relu(self.conv2(x)), (2, 2), strides=(1, 1))
        return self.fc2(relu(self.fc1(flatten_chw(x))))
