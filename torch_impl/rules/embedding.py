"""nn.Embedding: a per-example gradient is SPARSE (only the rows of that example's tokens), so neither the
norm nor the clipped sum writes the dense (B x V x d) tensor (seed-scale: B x 10004 x 16).

  grad    (per_layer, whose API returns dense per-example gradients): rows index_add-ed into (B, V, d);
  norm    ||G_b||^2 = sum_{t,s: id_t = id_s} <g_t, g_s>, each example's equal ids grouped on their own (no
          global sort over the B T keys), by ``contract.cost_model.embedding_route``:
            "sort"  each row's T ids sorted (B sorts of T); a position whose id occurs once in its example adds
                    ||g_t||^2 (one streaming pass), the rows of repeated ids are summed per (example, id) by an
                    ``index_add`` over those rows only, then squared: O(B T (log T + d));
            "gram"  the T x T equality Gram sum_{t,s} [id_t = id_s] <g_t, g_s>: O(B T^2 d), for short rows;
  sum     sum_b w_b G_b = index_add of w_b g_bt into rows id_bt of a (V, d) buffer (the parameter's size).
``padding_idx`` rows get no gradient (as torch's backward); ``max_norm`` / ``scale_grad_by_freq`` / ``sparse``
instances are left to the fallback (their gradient depends on the batch).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from contract.cost_model import embedding_route

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


def _sort_norm_sq(ids: Tensor, g: Tensor) -> Tensor:
    """(B,) ||G_b||^2 by per-row sorting: ids (B, N), g (B, N, d) (padding rows already zero)."""
    b, n, d = g.shape
    s, perm = torch.sort(ids, dim=1)
    same = s[:, 1:] == s[:, :-1]  # sorted neighbours with one id: both belong to a repeated id's group
    repeated = torch.zeros_like(s, dtype=torch.bool)
    repeated[:, 1:] |= same
    repeated[:, :-1] |= same
    once = ~torch.zeros_like(repeated).scatter_(1, perm, repeated)  # back to the positions' own order
    out = (torch.linalg.vector_norm(g, dim=2).square() * once).sum(1)
    rb, rt = repeated.nonzero(as_tuple=True)  # row-major: each group's positions are adjacent
    if rb.numel():
        keys = s[rb, rt]
        start = torch.ones_like(rb, dtype=torch.bool)
        start[1:] = (keys[1:] != keys[:-1]) | (rb[1:] != rb[:-1])
        group = start.cumsum(0) - 1
        rows = torch.zeros(int(group[-1]) + 1, d, dtype=g.dtype, device=g.device)
        rows.index_add_(0, group, g[rb, perm[rb, rt]])
        out = out.index_add(0, rb[start], torch.linalg.vector_norm(rows, dim=1).square())
    return out


def _gram_norm_sq(ids: Tensor, g: Tensor) -> Tensor:
    """(B,) ||G_b||^2 = sum_{t,s} [id_t = id_s] <g_t, g_s>: ids (B, N), g (B, N, d)."""
    return (torch.bmm(g, g.transpose(1, 2)) * (ids.unsqueeze(2) == ids.unsqueeze(1))).sum(dim=(1, 2))


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
    if embedding_route(ids.shape[1], g.shape[-1]) == "gram":
        return _gram_norm_sq(ids, g)
    return _sort_norm_sq(ids, g)


@register_clipped_sum("embedding", nn.Embedding)
def embedding_clipped_sum(layer: nn.Embedding, a: Tensor, g: Tensor, w: Tensor) -> Leaves:
    ids, g = _rows(layer, a, g)
    d = g.shape[-1]
    gc = (g * w.view(-1, 1, 1)).reshape(-1, d)
    out = torch.zeros(layer.num_embeddings, d, dtype=g.dtype, device=g.device)
    return {"weight": out.index_add_(0, ids.reshape(-1), gc)}
