"""nnx.Embed: a per-example gradient is SPARSE (only the rows of that example's tokens), so neither the norm
nor the clipped sum writes the dense (B x V x d) tensor (mirrors ``torch_impl.rules.embedding``).

  grad    (per_layer, whose API returns dense per-example gradients): rows scatter-added into (B, V, d);
  norm    ||G_b||^2 = sum_{t,s: id_t = id_s} <g_t, g_s>, each example's equal ids grouped on their own, by
          ``contract.cost_model.embedding_route``:
            "sort"  each example's ids sorted on their own (B sorts of T; the key id T + t packs the position
                    in, so one operand is sorted), a group index where the id changes, sent back to the
                    positions by an int scatter, the cotangent rows ``segment_sum``-ed into B T groups
                    (unused ones stay zero), squared: O(B T (log T + d)), static shapes;
            "gram"  the T x T equality Gram sum_{t,s} [id_t = id_s] <g_t, g_s>: O(B T^2 d), for short rows;
  sum     sum_b w_b G_b = scatter-add of w_b g_bt into rows id_bt of a (V, d) buffer (the parameter's size).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from contract.cost_model import embedding_route
from jax_impl.layers import PRECISION

from jax_impl.rules import Leaves, register_clipped_sum, register_grad_sampler, register_layout, register_norm_sampler

register_layout({"embedding": ("weight", None)}, nnx.Embed)  # (V, d) on both sides


def _rows(ids: jax.Array, g: jax.Array) -> tuple[jax.Array, jax.Array]:
    return ids.reshape(ids.shape[0], -1), g.reshape(g.shape[0], -1, g.shape[-1])


@register_grad_sampler("embedding", nnx.Embed)
def embed_grad_sample(layer: nnx.Embed, a: jax.Array, g: jax.Array) -> Leaves:
    ids, g = _rows(a, g)
    b, v, d = ids.shape[0], layer.num_embeddings, g.shape[-1]
    flat = (jnp.arange(b)[:, None] * v + ids).reshape(-1)
    return {"embedding": jnp.zeros((b * v, d), g.dtype).at[flat].add(g.reshape(-1, d)).reshape(b, v, d)}


def _sorted_rows(ids: jax.Array, vocab: int) -> tuple[jax.Array, jax.Array]:
    """(each row's ids sorted, the position each came from), both (B, N) int32."""
    b, n = ids.shape
    ids = ids.astype(jnp.int32)
    if vocab * n <= int(jnp.iinfo(jnp.int32).max):  # the packed key id N + t fits int32
        key = jnp.sort(ids * n + jnp.arange(n, dtype=jnp.int32)[None, :], axis=1)  # one operand: ~2x faster than two
        return key // n, key % n
    order = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), (b, n))
    return jax.lax.sort((ids, order), dimension=1, num_keys=1)


def _sort_norm_sq(ids: jax.Array, g: jax.Array, vocab: int) -> jax.Array:
    """(B,) ||G_b||^2 by per-row sorting: ids (B, N) below ``vocab``, g (B, N, d)."""
    b, n, d = g.shape
    s, perm = _sorted_rows(ids, vocab)
    new = jnp.concatenate([jnp.ones((b, 1), bool), s[:, 1:] != s[:, :-1]], axis=1)
    group = jnp.cumsum(new.astype(jnp.int32), axis=1) - 1 + (jnp.arange(b, dtype=jnp.int32) * n)[:, None]
    # The group of each position in its own order: an int scatter of B N values, not a gather of the B N d rows.
    own = jnp.zeros((b, n), jnp.int32).at[jnp.arange(b)[:, None], perm].set(group, unique_indices=True)
    rows = jax.ops.segment_sum(g.reshape(-1, d), own.reshape(-1), num_segments=b * n)  # unused groups stay 0
    return jnp.square(rows).reshape(b, n * d).sum(axis=1)


def _gram_norm_sq(ids: jax.Array, g: jax.Array) -> jax.Array:
    """(B,) ||G_b||^2 = sum_{t,s} [id_t = id_s] <g_t, g_s>: ids (B, N), g (B, N, d)."""
    gram = jnp.einsum("btd,bsd->bts", g, g, precision=PRECISION)
    return jnp.where(ids[:, :, None] == ids[:, None, :], gram, 0).sum(axis=(1, 2))


@register_norm_sampler("embedding", nnx.Embed)
def embed_norm_sq(layer: nnx.Embed, a: jax.Array, g: jax.Array) -> jax.Array:
    ids, g = _rows(a, g)
    if embedding_route(ids.shape[1], g.shape[-1]) == "gram":
        return _gram_norm_sq(ids, g)
    return _sort_norm_sq(ids, g, layer.num_embeddings)


@register_clipped_sum("embedding", nnx.Embed)
def embed_clipped_sum(layer: nnx.Embed, a: jax.Array, g: jax.Array, w: jax.Array) -> Leaves:
    ids, g = _rows(a, g)
    d = g.shape[-1]
    gc = (g * w[:, None, None]).reshape(-1, d)
    return {"embedding": jnp.zeros((layer.num_embeddings, d), g.dtype).at[ids.reshape(-1)].add(gc)}
