"""logreg: Linear(104, 2) on 104 features (mirrors ``torch_impl.models.logreg``)."""
from __future__ import annotations

import jax
from flax import nnx

from jax_impl.models.common import PRECISION
from jax_impl.precision import promote_linear


class LogReg(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs) -> None:
        self.fc = nnx.Linear(104, 2, precision=PRECISION, promote_dtype=promote_linear, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (B, 104) float -> logits (B, 2)."""
        return self.fc(x)
