"""embed: Embedding(10004, 16), mean over 256 positions, Linear(16, 2) (mirrors ``torch_impl.models.embed``)."""
from __future__ import annotations

import jax
from flax import nnx

from jax_impl.models.common import PRECISION
from jax_impl.precision import promote_linear


class EmbedNet(nnx.Module):
    """Defaults: the registered workload; other widths are variants (scripts/embed_cost_model.py)."""

    def __init__(self, vocab: int = 10004, width: int = 16, classes: int = 2, *, rngs: nnx.Rngs) -> None:
        self.embedding = nnx.Embed(vocab, width, rngs=rngs)
        self.embedding.dtype = None  # Embed fixes its dtype at init (float32); None computes in the params' dtype
        self.fc = nnx.Linear(width, classes, precision=PRECISION, promote_dtype=promote_linear, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (B, T) int token ids (T = 256 registered) -> logits (B, classes)."""
        return self.fc(self.embedding(x).mean(axis=1))
