"""Which form a norm rule takes for one layer: the Gram (ghost) form or materialising the per-example gradient.

Bu, Mao & Xu (NeurIPS 2022) mixed ghost norm: for a layer applied at P positions (T tokens, or the H'W' outputs
of a convolution) with d inputs and p outputs per position, the Gram form
sum_{p,q} <a_p,a_q><g_p,g_q> costs ~P^2 (d + p) multiply-adds per example, materialising the (p x d) gradient
~P d p. Written once here; both sides' rules ask ``norm_route`` (the kinds ``conv``, ``linear``, ``lstm``).

Overrides are explicit contexts, never module globals: ``bookkeeping()`` (a book-keeping step chooses its own
linear routes) and ``forced_routes(conv="gram", ...)`` (tests and panels force one form per kind). JAX reads
them at trace time, like any Python value a traced function closes over.
"""
from __future__ import annotations

import contextvars
from contextlib import contextmanager
from typing import Iterator, Literal

Route = Literal["gram", "materialize"]
ROUTES: tuple[str, ...] = ("gram", "materialize")
# The embedding kind never materialises (its per-example gradient is sparse): its norm groups each example's
# equal ids either by the T x T equality Gram or by a per-row sort (``embedding_route``).
KIND_ROUTES: dict[str, tuple[str, ...]] = {"embedding": ("gram", "sort")}

# Conv layers: gram when P (d + p) < CONV_GRAM_SLACK * d p. Measured (scripts/conv_cost_model.py,
# paper/cpu-costmodel/: every conv layer of every workload, B = 16 / 64 / 256, float32, 1 thread, medians of
# interleaved repeats, 2-core Xeon shared with other jobs): with slack 1 the model chose the slower form on 8 of 72
# points, worst cifar10_cnn conv8 (P=16, d=2304, p=10, P (d+p) / (d p) = 1.61): materialize 4.9 / 13.2 / 53 ms vs
# gram 1.6 / 5.0 / 35 ms in JAX (the model's choice 3.0x / 2.6x / 1.5x slower), a tie in torch (6.6 / 11.1 / 44.7
# vs 6.4 / 8.9 / 45.8 ms). The next layer up, cifar10_cnn conv4 (ratio 4.44), materialises 1.4-4.6x faster in both,
# so every slack in (1.61, 4.44) ranks all measured layers alike; 2.5 (about their geometric middle) moves conv8 to
# gram: mean penalty over all points 1.066 -> 1.005, worst 2.98x -> 1.13x (mnist_cnn conv2, ratio 0.88, a near-tie:
# 1.08-1.13x either way).
CONV_GRAM_SLACK = 2.5

# Linear layers on T positions: gram when T (d + p) < LINEAR_GRAM_SLACK * d p. Measured (scripts/seq_cost_model.py,
# paper/cpu-seq-costmodel/: the transformer's in_proj 256->768, out_proj 256->256, linear1 / linear2 256<->1024 at
# T = 32 / 128 / 512, B = 64, float32, 1 thread, medians of interleaved repeats, shared 2-core Xeon): slack 1 chose
# the slower form on 2 of 24 points, both out_proj at T = 128 (cost ratio T (d + p) / (d p) exactly 1: a tie the
# model breaks towards materialising), where gram was 1.19x (torch) / 1.74x (JAX) faster; Gram also won at ratios
# 0.16-0.67 (1.35-23x) and materialising at 2.5-4 (1.85-4.5x). Every slack in (1, 2.5] ranks all 24 points right;
# 1.6 (about their geometric middle) is used.
LINEAR_GRAM_SLACK = 1.6

# Inside book-keeping (``bookkeeping()``): a linear layer takes gram when T^2 (d + p) < BK_MATERIALISE_COST * d p,
# i.e. the slack BK_MATERIALISE_COST / T. Why another rule: the Gram-normed layer's bk sum is one more weight
# gradient (T d p per example) on top of the Gram products (T^2 (d + p)), while a materialised layer writes its d p
# gradient values (T d p) and sums them by a tensordot; so Gram wins when T^2 (d + p) < c d p, c = the cost of
# writing and re-reading one gradient value in multiply-adds (~25-30 on this CPU: ~50 GFLOP/s against ~7 GB/s of
# writes). Measured (scripts/seq_length_panel.py, whole bk steps of the transformer, B = 64, every linear layer
# forced to one form, paper/cpu-seq-panel*/): Gram 0.79x materialise at T = 32 (T^2 (d + p) / (d p) = 5-8) in both
# frameworks, 1.13x (torch) / 1.06x (JAX) at T = 128 (80-128), 1.16x / 1.41x at T = 512, while the norm-only rule
# (LINEAR_GRAM_SLACK) picks Gram up to T = 205-328 there. 25 sits between 8 and 80 (about their geometric middle).
# dp_ghost keeps LINEAR_GRAM_SLACK: its sums come from a second backward whichever form the norm takes.
BK_MATERIALISE_COST = 25.0

# The LSTM's gate weights (in + H -> 4H at T steps) use the linear layers' model with slack 1 (not measured apart).
LSTM_GRAM_SLACK = 1.0

_BOOKKEEPING: contextvars.ContextVar[bool] = contextvars.ContextVar("bookkeeping", default=False)
_FORCED: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("forced_routes", default={})


@contextmanager
def bookkeeping() -> Iterator[None]:
    """Within: norm rules choose their form for a book-keeping step (see ``BK_MATERIALISE_COST``)."""
    token = _BOOKKEEPING.set(True)
    try:
        yield
    finally:
        _BOOKKEEPING.reset(token)


def in_bookkeeping() -> bool:
    return _BOOKKEEPING.get()


@contextmanager
def forced_routes(**routes: str | None) -> Iterator[None]:
    """Within: every layer of kind K takes ``routes[K]`` ("gram" / "materialize"; None: the model decides).
    ``linear`` covers every layer whose norm is the linear rule's (the packed projection too)."""
    bad = {k: r for k, r in routes.items() if r is not None and r not in KIND_ROUTES.get(k, ROUTES)}
    if bad:
        raise ValueError(f"unknown norm route(s) {bad}; expected one of {ROUTES} "
                         f"(embedding: {KIND_ROUTES['embedding']})")
    token = _FORCED.set({**_FORCED.get(), **{k: r for k, r in routes.items() if r is not None}})
    try:
        yield
    finally:
        _FORCED.reset(token)


def gram_is_cheaper(positions: int, d_in: int, d_out: int, slack: float = 1.0) -> bool:
    """P (d_in + d_out) < slack * d_in d_out: the Gram form's ~P^2 (d + p) against materialising's ~P d p per
    example (P = 1, one position: the Gram form is the rank-one ||a|| ||g||, always cheaper)."""
    return positions * (d_in + d_out) < slack * d_in * d_out


def slack(kind: str, positions: int) -> float:
    """The measured slack of ``kind`` (``CONV_GRAM_SLACK`` ...), book-keeping's for linear layers inside it."""
    if kind == "conv":
        return CONV_GRAM_SLACK
    if kind == "linear":
        return BK_MATERIALISE_COST / positions if in_bookkeeping() else LINEAR_GRAM_SLACK
    if kind == "lstm":
        return LSTM_GRAM_SLACK
    raise ValueError(f"no cost model for layer kind {kind!r}")


def norm_route(kind: str, positions: int, d_in: int, d_out: int) -> Route:
    """"gram" or "materialize" for one layer of ``kind``: a forced route if one is set, else the cost model."""
    forced = _FORCED.get().get(kind)
    if forced is not None:
        return forced  # type: ignore[return-value]
    return "gram" if gram_is_cheaper(positions, d_in, d_out, slack(kind, positions)) else "materialize"


# Embedding layers: ||G_b||^2 = sum_{t,s: id_t = id_s} <g_t, g_s> over one example's T positions (d features).
# "gram": the T x T equality Gram, ~T^2 (d + m) per example (the d-long dot products, and the T^2 mask, compare and
# sum at ~m multiply-adds a pair); "sort": each example's T ids sorted on their own (~s per key and level, T log2 T)
# and the rows of each group summed by a scatter (~r per value, T d). Gram when
#   T (d + EMBED_MASK_PER_PAIR) < EMBED_SORT_PER_KEY log2 T + EMBED_SCATTER_PER_VALUE d.
# Measured (scripts/embed_cost_model.py, paper/perf-embed/costmodel-*.json: B = 64, ids uniform below 10004,
# T = 2..256, d = 16 / 256, both norm forms timed in interleaved rounds, float32, 1 thread, 2-core AMD EPYC shared with
# other jobs): torch's crossover lies between T = 16 (gram 0.71x sort) and 32 (1.36x) at d = 16, between T = 4 (0.62x)
# and 8 (1.23x) at d = 256; m = 8, s = 96, r = 6 (solved from those two crossovers) rank all 14 torch points right.
# JAX's sort is relatively slower (XLA:CPU's scatter of 256-float rows): at d = 256 gram is 0.70-0.92x sort at
# T = 8..32 where this picks sort (the worst miss 1.4x, at 0.1-1 ms), sort wins from T = 64 (1.23x) and 256 (2.3x); at
# d = 16 the two are within noise up to T = 64 and sort wins 4.1x at T = 256. The workloads' embeddings (embed
# T = 256, d = 16; transformer T = 128, d = 256) get sort.
EMBED_MASK_PER_PAIR = 8.0
EMBED_SORT_PER_KEY = 96.0
EMBED_SCATTER_PER_VALUE = 6.0


def embedding_costs(positions: int, d: int) -> tuple[float, float]:
    """(gram, sort) modelled cost per example, in multiply-adds, of an embedding norm at T positions, d features."""
    log_t = max(positions - 1, 1).bit_length()  # ceil(log2 T): the sort's levels
    return (positions * positions * (d + EMBED_MASK_PER_PAIR),
            positions * (EMBED_SORT_PER_KEY * log_t + EMBED_SCATTER_PER_VALUE * d))


def embedding_route(positions: int, d: int) -> str:
    """"gram" or "sort" for an embedding layer looked up at ``positions`` per example (a forced route if set)."""
    forced = _FORCED.get().get("embedding")
    if forced is not None:
        return forced
    gram, sort = embedding_costs(positions, d)
    return "gram" if gram < sort else "sort"
