"""Decision sites of any workload, framework-neutral (numpy): what a ReLU gate or a max-pool winner is, where it
sits, how far each float64 decision is from flipping, and which flips the gradient can notice.

A *site* is one call of a non-smooth function in the forward, found from the model itself by the mirrored
recorders in ``torch_impl.decisions`` / ``jax_impl.decisions`` (torch: a ``TorchFunctionMode`` on ``F.relu``
and ``F.max_pool2d``; JAX: the models' ``relu`` / ``max_pool`` helpers of ``jax_impl.models.common``):

- ``relu``: gate ``pre > 0`` per element; key ``"{layer}.relu"`` where ``layer`` is the parameterised layer
  whose output it gates (its pre-activation is ``"{layer}.pre"``; its rounding scale S = layer(|a|; |W|, |b|),
  the absolute sum the float32 dot product accumulates, is ``"{layer}.scale"``). S exists only where the layer
  is a dot product (kinds in ``SCALED_KINDS``); a ReLU after a normalisation (GroupNorm, LayerNorm) has no S:
  the rounding of a normalised value is not bounded by one absolute sum, so its margins are NaN ("unknown").
- ``max_pool``: the winner of each window, an int8 position ``dh * kw + dw`` inside the (kh, kw) window, one
  per output element (the input position max-pool's backward routes the cotangent to; first index on ties in
  both frameworks). Key ``"pool.winner"`` when the model has one max-pool, else ``"pool1.winner"``,
  ``"pool2.winner"``, ... in forward order. ``source``: the ReLU site whose output it pools (its gates and
  scales give the pool's margins).

Average pools, means, embeddings and linear maps are smooth: no site. Arrays are canonical NCHW / (B, F).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

U32 = 2.0**-24  # unit roundoff of float32
SCALED_KINDS = ("linear", "conv")  # layer kinds whose output is a dot product of input and weights: S is known
Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class Site:
    """One non-smooth call of the forward. ``shape``: one sample's decision array shape (canonical)."""

    key: str
    kind: str  # "relu" | "max_pool"
    shape: tuple[int, ...]
    layer: str | None = None  # relu: the layer whose output it gates (None: not directly a layer's output)
    source: str | None = None  # max_pool: the relu site whose output it pools (None: something else)
    kernel: tuple[int, int] = (0, 0)
    stride: tuple[int, int] = (0, 0)
    in_shape: tuple[int, ...] = ()  # max_pool: one sample's input (C, H, W)

    @property
    def base(self) -> str:
        """``"conv1"`` for ``"conv1.relu"``: the prefix of its ``.pre`` / ``.scale`` arrays."""
        return self.key.rsplit(".", 1)[0]


def relu_key(layer: str | None, taken: list[str]) -> str:
    """``"{layer}.relu"`` (``"act{i}.relu"`` without a layer), ``"@n"``-suffixed if that layer's output is gated twice."""
    base = layer if layer is not None else f"act{len(taken)}"
    key, n = f"{base}.relu", 1
    while key in taken:
        key, n = f"{base}@{n}.relu", n + 1
    return key


def pool_key(index: int, single: bool) -> str:
    """The key of the ``index``-th (0-based) max-pool: ``"pool.winner"`` in a model with one, else ``"pool{index+1}.winner"``."""
    return "pool.winner" if single else f"pool{index + 1}.winner"


def single_pool(sites: list[Site]) -> bool:
    return sum(s.kind == "max_pool" for s in sites) == 1


def rename(sites: list[Site]) -> list[Site]:
    """Sites recorded with ``single=False`` keys -> final keys (``"pool.winner"`` when the model has one)."""
    if not single_pool(sites):
        return sites
    names = {s.key: pool_key(0, True) for s in sites if s.kind == "max_pool"}
    return [Site(names.get(s.key, s.key), s.kind, s.shape, s.layer, s.source, s.kernel, s.stride, s.in_shape)
            for s in sites]


def windows(a: np.ndarray, site: Site) -> np.ndarray:
    """(B, C, H, W) pool input -> (B, C, Ho, Wo, kh*kw), last axis = dh * kw + dw (no padding)."""
    kh, kw = site.kernel
    sh, sw = site.stride
    view = np.lib.stride_tricks.sliding_window_view(a, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]
    ho, wo = site.shape[1:]
    return view[:, :, :ho, :wo].reshape(*view.shape[:2], ho, wo, kh * kw)


def window_positions(site: Site, winners: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Winners (B, C, Ho, Wo) -> the input rows and columns (each (B, C, Ho, Wo)) they route to."""
    kh, kw = site.kernel
    sh, sw = site.stride
    ho, wo = site.shape[1:]
    w = winners.astype(np.intp)
    return np.arange(ho)[:, None] * sh + w // kw, np.arange(wo)[None, :] * sw + w % kw


def winner_mask(site: Site, winners: np.ndarray) -> np.ndarray:
    """Winners (B, C, Ho, Wo) -> (B, C, H, W) bool, True at every input position some window routes to."""
    b, c = winners.shape[:2]
    rows, cols = window_positions(site, winners)
    mask = np.zeros((b, c, *site.in_shape[1:]), bool)
    bi, ci = np.meshgrid(np.arange(b), np.arange(c), indexing="ij")
    mask[bi[..., None, None], ci[..., None, None], rows, cols] = True
    return mask


def argmax_winners(values: np.ndarray, site: Site) -> np.ndarray:
    """Winners from a pool's input values (B, C, H, W): first index of the max in each window (the position
    both frameworks' max-pool backward routes to on a tie)."""
    return np.argmax(windows(values, site), axis=-1).astype(np.int8)


def check_decisions(sites: list[Site], decisions: Arrays, batch_size: int) -> Arrays:
    """Every site's decision present with shape (B, *site.shape); winners inside their window."""
    for s in sites:
        if s.key not in decisions:
            raise ValueError(f"decisions: missing {s.key!r}; expected keys {[t.key for t in sites]}")
        if decisions[s.key].shape != (batch_size, *s.shape):
            raise ValueError(f"decisions: {s.key}: expected shape {(batch_size, *s.shape)}, "
                             f"found {decisions[s.key].shape}")
        if s.kind == "max_pool" and decisions[s.key].size:
            w = decisions[s.key]
            if w.min() < 0 or w.max() >= s.kernel[0] * s.kernel[1]:
                raise ValueError(f"decisions: {s.key} must lie in 0..{s.kernel[0] * s.kernel[1] - 1}")
    return decisions


def _by_key(sites: list[Site]) -> dict[str, Site]:
    return {s.key: s for s in sites}


def decision_margins(sites: list[Site], d: Arrays) -> Arrays:
    """How far each float64 decision is from flipping, in units of its rounding scale u*S (NaN where S is unknown).

    relu: |pre| / (u*S), the gates' shape. max_pool: (B, C, Ho, Wo, kh*kw) post-ReLU gap between each window's
    winner and each position over u * max(S_winner, S_position) (0 at the winner). ``d``: float64
    ``forward_decisions(..., scales=True)``.
    """
    out: Arrays = {}
    by_key = _by_key(sites)
    for s in sites:
        if s.kind == "relu":
            scale = d.get(f"{s.base}.scale")
            pre = d[f"{s.base}.pre"]
            out[s.key] = np.abs(pre) / (U32 * scale) if scale is not None else np.full(pre.shape, np.nan)
            continue
        src = by_key.get(s.source) if s.source else None
        if src is None or f"{src.base}.scale" not in d:
            out[s.key] = np.full((*d[s.key].shape, s.kernel[0] * s.kernel[1]), np.nan)
            continue
        values = windows(d[f"{src.base}.pre"] * d[src.key], s)
        us = windows(U32 * d[f"{src.base}.scale"], s)
        win = d[s.key][..., None].astype(np.intp)
        gap = np.take_along_axis(values, win, -1) - values
        out[s.key] = gap / np.maximum(np.take_along_axis(us, win, -1), us)
    return out


def routed_mask(sites: list[Site], key: str, *decision_sets: Arrays) -> np.ndarray | None:
    """For a relu site whose output a max-pool reads: True where a winner of any given decision set routes
    (only there can its gate move the gradient); None for a relu read by no max-pool."""
    pools = [s for s in sites if s.kind == "max_pool" and s.source == key]
    if not pools:
        return None
    return np.any([winner_mask(p, d[p.key]) for p in pools for d in decision_sets], axis=0)


def near_kinks(sites: list[Site], d: Arrays, margins: Arrays, threshold: float) -> list[tuple[str, tuple[int, ...], float]]:
    """Float64 decisions whose gradient matters and that lie within ``threshold`` u*S of flipping.

    Returns (key, (sample, channel[, h, w]), margin). A gate read by a max-pool counts only at a winner; a
    pool near-tie only between the winner and another open gate (a tie with a ReLU'd zero is the winner's own
    ReLU kink).
    """
    by_key = _by_key(sites)
    near: Arrays = {}
    for s in sites:
        if s.kind == "relu":
            at = routed_mask(sites, s.key, d)
            near[s.key] = margins[s.key] if at is None else np.where(at, margins[s.key], np.inf)
            continue
        src = by_key.get(s.source) if s.source else None
        open_gates = windows(d[src.key], s) if src is not None else np.ones(margins[s.key].shape, bool)
        rivals = open_gates & (np.arange(s.kernel[0] * s.kernel[1]) != d[s.key][..., None])
        near[s.key] = np.where(rivals, margins[s.key], np.inf).min(axis=-1, initial=np.inf)
    return [(k, tuple(int(i) for i in idx), float(m[idx]))
            for k, m in near.items() for idx in zip(*np.nonzero(m < threshold))]


def find_flips(sites: list[Site], d32: Arrays, d64: Arrays, margins: Arrays, sample: int) -> list[tuple]:
    """Decisions of ``sample`` where float32 differs from float64 and the gradient can notice (a gate read by a
    max-pool only at a winner of either precision): (key, index, margin, float64, float32), smallest margin first."""
    flips = []
    one = slice(sample, sample + 1)
    for s in sites:
        a, b = d64[s.key][sample], d32[s.key][sample]
        differs = a != b
        if s.kind == "relu":
            at = routed_mask(sites, s.key, {k: v[one] for k, v in d32.items()}, {k: v[one] for k, v in d64.items()})
            if at is not None:
                differs &= at[0]
        for idx in zip(*np.nonzero(differs)):
            m = margins[s.key][sample][idx + ((int(b[idx]),) if s.kind == "max_pool" else ())]
            flips.append((s.key, tuple(int(i) for i in idx), float(m), int(a[idx]), int(b[idx])))
    return sorted(flips, key=lambda f: (np.isnan(f[2]), f[2]))
