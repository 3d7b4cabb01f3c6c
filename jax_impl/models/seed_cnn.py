"""seed_cnn: the seed tutorial's CNN (mirrors ``torch_impl.models.seed_cnn``)."""
from __future__ import annotations

import jax
from flax import nnx

from jax_impl.models.common import PRECISION, flatten_chw, max_pool, nhwc, relu
from jax_impl.precision import promote_conv, promote_linear


class SimpleCNN(nnx.Module):
    """conv 1->32 k3, relu, conv 32->64 k3, relu, max-pool 2, flatten (C,H,W), fc 9216->128, relu, fc 128->10."""

    def __init__(self, *, rngs: nnx.Rngs) -> None:
        self.conv1 = nnx.Conv(1, 32, (3, 3), padding="VALID", precision=PRECISION, promote_dtype=promote_conv,
                              rngs=rngs)
        self.conv2 = nnx.Conv(32, 64, (3, 3), padding="VALID", precision=PRECISION, promote_dtype=promote_conv,
                              rngs=rngs)
        self.fc1 = nnx.Linear(9216, 128, precision=PRECISION, promote_dtype=promote_linear, rngs=rngs)
        self.fc2 = nnx.Linear(128, 10, precision=PRECISION, promote_dtype=promote_linear, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (B, 1, 28, 28) NCHW -> logits (B, 10)."""
        x = relu(self.conv1(nhwc(x)))
        x = relu(self.conv2(x))
        x = max_pool(x, (2, 2), strides=(2, 2))
        x = flatten_chw(x)  # torch's (C, H, W) order: fc1's kernel is the canonical weight transposed
        x = relu(self.fc1(x))
        return self.fc2(x)
