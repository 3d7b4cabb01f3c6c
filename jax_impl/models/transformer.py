"""transformer in Flax NNX (mirrors ``torch_impl.models.transformer``: same attribute names, so the module paths
are the canonical ``state_dict`` prefixes, e.g. ``encoder.layers.0.self_attn``).

Layouts (``jax_impl.weights.KIND_LAYOUTS``, registered by each kind's rule file; the classes are in
``jax_impl.layers``):
  MultiheadSelfAttention  in_proj_kernel (d, 3d) <- in_proj_weight (3d, d) transposed: column j of the kernel is
                          row j of torch's packed weight, so columns [0, d) are q, [d, 2d) k, [2d, 3d) v, and
                          within each, head h owns the 64 columns [h 64, (h + 1) 64) (torch's ``chunk(3)``
                          then ``view(T, H, hd)``); in_proj_bias (3d,) unchanged, same order;
  nnx.LayerNorm           scale <- weight, bias <- bias (epsilon 1e-5 as torch, two-pass variance);
  LearnedPositions        weight (T, d) unchanged; out_proj / linear1 / linear2 / fc are nnx.Linear, embedding
                          nnx.Embed (their existing rules).
Why not ``nnx.MultiHeadAttention``: it keeps q, k, v as three ``LinearGeneral`` kernels (d, H, hd) and out as
(H, hd, d): one canonical tensor would map to three native ones, while the layout table (and every rule) is
one native leaf <-> one canonical leaf; and there is no rule kind for LinearGeneral. The math is the same.
"""
from __future__ import annotations

import jax
from flax import nnx

from jax_impl.layers import PRECISION, LearnedPositions, MultiheadSelfAttention
from jax_impl.layers import Projection, attend  # noqa: F401 - re-exported (tests and scripts import them from here)
from jax_impl.precision import promote_linear

VOCAB, SEQ_LEN, WIDTH, HEADS, FF, LAYERS, CLASSES = 10004, 128, 256, 4, 1024, 2, 2


def layer_norm(width: int, rngs: nnx.Rngs) -> nnx.LayerNorm:
    """torch's nn.LayerNorm: epsilon 1e-5; the two-pass variance E[(x - mean)^2]."""
    return nnx.LayerNorm(width, epsilon=1e-5, use_fast_variance=False, rngs=rngs)


class EncoderLayer(nnx.Module):
    def __init__(self, width: int, heads: int, ff: int, *, rngs: nnx.Rngs) -> None:
        self.self_attn = MultiheadSelfAttention(width, heads, rngs=rngs)
        self.linear1 = nnx.Linear(width, ff, precision=PRECISION, promote_dtype=promote_linear, rngs=rngs)
        self.linear2 = nnx.Linear(ff, width, precision=PRECISION, promote_dtype=promote_linear, rngs=rngs)
        self.norm1 = layer_norm(width, rngs)
        self.norm2 = layer_norm(width, rngs)

    def __call__(self, h: jax.Array) -> jax.Array:
        h = h + self.self_attn(self.norm1(h))
        return h + self.linear2(jax.nn.gelu(self.linear1(self.norm2(h)), approximate=True))


class Encoder(nnx.Module):
    def __init__(self, width: int, heads: int, ff: int, num_layers: int, *, rngs: nnx.Rngs) -> None:
        self.layers = nnx.List([EncoderLayer(width, heads, ff, rngs=rngs) for _ in range(num_layers)])
        self.norm = layer_norm(width, rngs)

    def __call__(self, h: jax.Array) -> jax.Array:
        for layer in self.layers:
            h = layer(h)
        return self.norm(h)


class TransformerNet(nnx.Module):
    """x (B, T) int token ids -> logits (B, classes)."""

    def __init__(self, vocab: int = VOCAB, seq_len: int = SEQ_LEN, width: int = WIDTH, heads: int = HEADS,
                 ff: int = FF, num_layers: int = LAYERS, classes: int = CLASSES, *, rngs: nnx.Rngs) -> None:
        self.embedding = nnx.Embed(vocab, width, rngs=rngs)
        self.embedding.dtype = None  # compute in the parameters' dtype (see jax_impl.models.embed)
        self.pos_embedding = LearnedPositions(seq_len, width, rngs=rngs)
        self.encoder = Encoder(width, heads, ff, num_layers, rngs=rngs)
        self.fc = nnx.Linear(width, classes, precision=PRECISION, promote_dtype=promote_linear, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc(self.encoder(self.pos_embedding(self.embedding(x))).mean(axis=1))
