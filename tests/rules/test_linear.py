"""Kind "linear" (torch ``nn.Linear``, flax ``nnx.Linear``) on (B, d) inputs (one position: the rank-one norm)
and on (B, T, d) inputs (T positions: the Gram-or-materialise norm), with and without bias."""
from __future__ import annotations

import numpy as np
import pytest
import torch.nn as nn
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st

from .checker import FRAMEWORKS, SETTINGS, abstract, check_case, seeds


def make_linear(framework: str, d: int, p: int, bias: bool) -> object:
    if framework == "torch":
        return nn.Linear(d, p, bias=bias)
    return abstract(lambda: nnx.Linear(d, p, use_bias=bias, rngs=nnx.Rngs(0)))


@pytest.mark.parametrize("framework", FRAMEWORKS)
@SETTINGS
@given(b=st.integers(1, 4), d=st.integers(1, 8), p=st.integers(1, 8), bias=st.booleans(), seed=seeds)
def test_linear_one_position(framework: str, b: int, d: int, p: int, bias: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    check_case(make_linear(framework, d, p, bias), rng.standard_normal((b, d)), rng, kind="linear", route="linear")


@pytest.mark.parametrize("framework", FRAMEWORKS)
@SETTINGS
@given(b=st.integers(1, 4), t=st.integers(1, 6), d=st.integers(1, 8), p=st.integers(1, 8), bias=st.booleans(),
       seed=seeds)
def test_linear_positions(framework: str, b: int, t: int, d: int, p: int, bias: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    check_case(make_linear(framework, d, p, bias), rng.standard_normal((b, t, d)), rng, kind="linear",
               route="linear")
