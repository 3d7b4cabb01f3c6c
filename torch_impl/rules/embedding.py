"""nn.Embedding: a per-example gradient is SPARSE (only the rows of that example's tokens), so neither the
norm nor the clipped sum writes the dense (B x V x d) tensor (seed-scale: B x 10004 x 16).

  grad    (per_layer, whose API returns dense per-example gradients): rows index_add-ed into (B, V, d);
  norm    ||G_b||^2 = sum_{t,s: id_t = id_s} <g_t, g_s>: the cotangent rows summed per distinct
          (example, id) pair (one ``unique`` + ``index_add``), then squared: O(B T d), not O(B T^2 d);
  sum     sum_b w_b G_b = index_add of w_b g_bt into rows id_bt of a (V, d) buffer (the parameter's size).
``padding_idx`` rows get no gradient (as torch's backward); ``max_norm`` / ``scale_grad_by_freq`` / ``sparse``
instances are left to the fallback (their gradient depends on the batch).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from torch_impl.rules import Leaves, register_clipped_sum, register_grad_sampler, register_norm_sampler

Tensor = torch.Tensor


def _plain(layer: nn.Embedding) -> bool:
    return layer.max_norm is None and not layer.scale_grad_by_freq and not layer.sparse


def _rows(layer: nn.Embedding, ids: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
    """(ids (B, N) flattened positions, g (B, N, d)) with the padding rows' cotangents zeroed."""
    ids, g = ids.reshape(ids.shape[0], -1), g.reshape(g.shape[0], -1, g.shape[-1])
    if layer.padding_idx is not None:
        g = g * (ids != layer.padding_idx).unsqueeze(-1).to(g.dtype)
    return ids, g


def _example_keys(ids: Tensor, vocab: int) -> Tensor:
    """(B*N,) one key per (example, token id) pair: b * vocab + id, so equal keys are one row of one example."""
    return (torch.arange(ids.shape[0], device=ids.device).unsqueeze(1) * vocab + ids).reshape(-1)


@register_grad_sampler("embedding", nn.Embedding)
def embedding_grad_sample(layer: nn.Embedding, a: Tensor, g: Tensor) -> Leaves | None:
    if not _plain(layer):
        return None
    ids, g = _rows(layer, a, g)
    b, v, d = ids.shape[0], layer.num_embeddings, g.shape[-1]
    out = torch.zeros(b * v, d, dtype=g.dtype, device=g.device).index_add_(0, _example_keys(ids, v), g.reshape(-1, d))
    return {"weight": out.view(b, v, d)}


@register_norm_sampler("embedding", nn.Embedding)
def embedding_norm_sq(layer: nn.Embedding, a: Tensor, g: Tensor) -> Tensor | None:
    if not _plain(layer):
        return None
    ids, g = _rows(layer, a, g)
    b, v, d = ids.shape[0], layer.num_embeddings, g.shape[-1]
    pairs, inverse = torch.unique(_example_keys(ids, v), return_inverse=True)
    rows = torch.zeros(pairs.shape[0], d, dtype=g.dtype, device=g.device).index_add_(0, inverse, g.reshape(-1, d))
    per_pair = torch.linalg.vector_norm(rows, dim=1).square()
    return torch.zeros(b, dtype=g.dtype, device=g.device).index_add_(0, pairs // v, per_pair)


@register_clipped_sum("embedding", nn.Embedding)
def embedding_clipped_sum(layer: nn.Embedding, a: Tensor, g: Tensor, w: Tensor) -> Leaves:
    ids, g = _rows(layer, a, g)
    d = g.shape[-1]
    gc = (g * w.view(-1, 1, 1)).reshape(-1, d)
    out = torch.zeros(layer.num_embeddings, d, dtype=g.dtype, device=g.device)
    return {"weight": out.index_add_(0, ids.reshape(-1), gc)}
