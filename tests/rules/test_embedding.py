"""Kind "embedding" (torch ``nn.Embedding``, flax ``nnx.Embed``): ids (B,) or (B, T) from a small vocabulary, every
example holding at least one repeated id (its rows' cotangents must add up before the norm is taken); torch's
``padding_idx`` (that row gets no gradient; flax's Embed has no such option). ``scale_grad_by_freq`` (a gradient
that depends on the id counts) is not covered by the torch rule: the engine must fall back and still match."""
from __future__ import annotations

import numpy as np
import pytest
import torch.nn as nn
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st

from .checker import FRAMEWORKS, SETTINGS, abstract, check_case, seeds


def token_ids(rng: np.random.Generator, b: int, t: int | None, vocab: int, padding: int | None) -> np.ndarray:
    """(B, T) ids, T >= 2 with each example's last id a repeat of its first; ``padding`` (if any) in example 0
    twice; t None: (B,) ids, one position per example."""
    if t is None:
        return rng.integers(0, vocab, b)
    ids = rng.integers(0, vocab, (b, t))
    if padding is not None:
        ids[0, 0] = padding
    ids[:, -1] = ids[:, 0]
    return ids


@pytest.mark.parametrize("framework", FRAMEWORKS)
@SETTINGS
@given(b=st.integers(1, 4), t=st.one_of(st.none(), st.integers(2, 6)), vocab=st.integers(1, 6),
       d=st.integers(1, 8), seed=seeds)
def test_embedding(framework: str, b: int, t: int | None, vocab: int, d: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    if framework == "torch":
        layer = nn.Embedding(vocab, d)
    else:
        layer = abstract(lambda: nnx.Embed(vocab, d, rngs=nnx.Rngs(0)))
        layer.dtype = None  # as the workloads build it: compute in the parameters' dtype (Embed fixes float32)
    check_case(layer, token_ids(rng, b, t, vocab, None), rng, kind="embedding")


@SETTINGS
@given(b=st.integers(1, 4), t=st.one_of(st.none(), st.integers(2, 6)), vocab=st.integers(1, 6),
       d=st.integers(1, 8), data=st.data(), seed=seeds)
def test_embedding_padding_idx(b: int, t: int | None, vocab: int, d: int, data: st.DataObject, seed: int) -> None:
    padding = data.draw(st.integers(-vocab, vocab - 1), label="padding_idx")  # negative: counted from the end
    rng = np.random.default_rng(seed)
    layer = nn.Embedding(vocab, d, padding_idx=padding)
    check_case(layer, token_ids(rng, b, t, vocab, layer.padding_idx), rng, kind="embedding")


@SETTINGS
@given(b=st.integers(1, 4), t=st.integers(2, 6), vocab=st.integers(1, 6), d=st.integers(1, 8), seed=seeds)
def test_embedding_scale_grad_by_freq_falls_back(b: int, t: int, vocab: int, d: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    layer = nn.Embedding(vocab, d, scale_grad_by_freq=True)
    check_case(layer, token_ids(rng, b, t, vocab, None), rng, kind="embedding", covered=False)
