"""Kind "lstm" (``torch_impl.layers.LSTM``, ``jax_impl.layers.LSTM``: one layer, batch first, two biases) on
(B, T, in) inputs, every norm route: the Gram form over the concatenated [x_t; h_t-1] and materialising. The
kind is registered on the layer's gate input projection (``GateInput``), where the engine records it; the rules see
the engine's record of that site (u = [x; h_prev], dz), the vmap fallback the layer's own input and output
cotangent."""
from __future__ import annotations

import importlib

import numpy as np
import pytest
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st

from .checker import FRAMEWORKS, SETTINGS, abstract, check_case, seeds


@pytest.mark.parametrize("framework", FRAMEWORKS)
@SETTINGS
@given(b=st.integers(1, 3), t=st.integers(1, 4), d=st.integers(1, 4), h=st.integers(1, 3), seed=seeds)
def test_lstm(framework: str, b: int, t: int, d: int, h: int, seed: int) -> None:
    cls = importlib.import_module(f"{framework}_impl.layers").LSTM
    layer = cls(d, h) if framework == "torch" else abstract(lambda: cls(d, h, rngs=nnx.Rngs(0)))
    rng = np.random.default_rng(seed)
    check_case(layer, rng.standard_normal((b, t, d)), rng, kind="lstm", route="lstm")
