"""ffnn: Linear(104, 50), ReLU, Linear(50, 2) (mirrors ``torch_impl.models.ffnn``)."""
from __future__ import annotations

import jax
from flax import nnx

from jax_impl.models.common import PRECISION, relu
from jax_impl.precision import promote_linear


class FFNN(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs) -> None:
        self.fc1 = nnx.Linear(104, 50, precision=PRECISION, promote_dtype=promote_linear, rngs=rngs)
        self.fc2 = nnx.Linear(50, 2, precision=PRECISION, promote_dtype=promote_linear, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (B, 104) float -> logits (B, 2)."""
        return self.fc2(relu(self.fc1(x)))
