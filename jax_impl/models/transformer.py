"""transformer in Flax NNX (mirrors ``torch_impl.models.transformer``: same attribute names, so the module paths
are the canonical ``state_dict`` prefixes, e.g. ``encoder.layers.0.self_attn``).

Layouts (``jax_impl.weights.KIND_LAYOUTS``, one rule per layer kind):
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

import math

import jax
import jax.numpy as jnp
from flax import nnx

from jax_impl.models.common import PRECISION

VOCAB, SEQ_LEN, WIDTH, HEADS, FF, LAYERS, CLASSES = 10004, 128, 256, 4, 1024, 2, 2


class LearnedPositions(nnx.Module):
    """A learned (T, d) table added to the (B, T, d) activations (rule kind "param_add")."""

    def __init__(self, seq_len: int, width: int, *, rngs: nnx.Rngs) -> None:
        self.weight = nnx.Param(0.02 * jax.random.normal(rngs.params(), (seq_len, width), jnp.float32))

    def __call__(self, h: jax.Array) -> jax.Array:
        return h + self.weight[...][None]


def attend(qkv: jax.Array, heads: int) -> jax.Array:
    """(B, T, 3d) packed [q | k | v] -> (B, T, d), as ``torch_impl.models.transformer.attend``."""
    b, t, three_d = qkv.shape
    hd = three_d // (3 * heads)
    q, k, v = (qkv.reshape(b, t, 3, heads, hd)[:, :, i] for i in range(3))  # each (B, T, H, hd)
    scores = jnp.einsum("bthd,bshd->bhts", q, k, precision=PRECISION) / math.sqrt(hd)
    out = jnp.einsum("bhts,bshd->bthd", jax.nn.softmax(scores, axis=-1), v, precision=PRECISION)
    return out.reshape(b, t, heads * hd)


class Projection(nnx.Module):
    """``x @ kernel + bias`` with its PARENT's parameters passed in; owns none (as torch's ``Projection``:
    the parent's site is recorded at this call, ``jax_impl.rules.site_module``, kind "projection")."""

    def __init__(self, kernel: str, bias: str | None) -> None:
        self.kernel_name, self.bias_name = kernel, bias
        self.applies = (kernel,) if bias is None else (kernel, bias)

    def __call__(self, x: jax.Array, kernel: jax.Array, bias: jax.Array | None) -> jax.Array:
        y = jnp.einsum("...d,de->...e", x, kernel, precision=PRECISION)
        return y if bias is None else y + bias.reshape((1,) * (y.ndim - 1) + bias.shape)


class MultiheadSelfAttention(nnx.Module):
    """Packed in-projection ``in_proj_kernel`` (d, 3d), ``in_proj_bias`` (3d,) applied by the parameter-free
    ``in_proj`` child, ``out_proj`` nnx.Linear."""

    def __init__(self, width: int, heads: int, *, rngs: nnx.Rngs) -> None:
        self.heads = heads
        self.in_proj_kernel = nnx.Param(nnx.initializers.xavier_uniform()(rngs.params(), (width, 3 * width)))
        self.in_proj_bias = nnx.Param(jnp.zeros(3 * width, jnp.float32))
        self.in_proj = Projection("in_proj_kernel", "in_proj_bias")
        self.out_proj = nnx.Linear(width, width, precision=PRECISION, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        qkv = self.in_proj(x, self.in_proj_kernel[...], self.in_proj_bias[...])
        return self.out_proj(attend(qkv, self.heads))


def layer_norm(width: int, rngs: nnx.Rngs) -> nnx.LayerNorm:
    """torch's nn.LayerNorm: epsilon 1e-5; the two-pass variance E[(x - mean)^2]."""
    return nnx.LayerNorm(width, epsilon=1e-5, use_fast_variance=False, rngs=rngs)


class EncoderLayer(nnx.Module):
    def __init__(self, width: int, heads: int, ff: int, *, rngs: nnx.Rngs) -> None:
        self.self_attn = MultiheadSelfAttention(width, heads, rngs=rngs)
        self.linear1 = nnx.Linear(width, ff, precision=PRECISION, rngs=rngs)
        self.linear2 = nnx.Linear(ff, width, precision=PRECISION, rngs=rngs)
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
        self.fc = nnx.Linear(width, classes, precision=PRECISION, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc(self.encoder(self.pos_embedding(self.embedding(x))).mean(axis=1))
