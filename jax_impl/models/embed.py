"""embed: Embedding(10004, 16), mean over 256 positions, Linear(16, 2) (mirrors ``torch_impl.models.embed``)."""
from __future__ import annotations

import jax
from flax import nnx

from jax_impl.models.common import PRECISION
from jax_impl.precision import promote_linear


class EmbedNet(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs) -> None:
        self.embedding = nnx.Embed(10004, 16, rngs=rngs)
        self.embedding.dtype = None  # Embed fixes its dtype at init (float32); None computes in the params' dtype
        self.fc = nnx.Linear(16, 2, precision=PRECISION, promote_dtype=promote_linear, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (B, 256) int token ids -> logits (B, 2)."""
        return self.fc(self.embedding(x).mean(axis=1))
