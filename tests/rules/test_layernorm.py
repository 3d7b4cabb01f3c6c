"""Kind "layernorm" (torch ``nn.LayerNorm``, flax ``nnx.LayerNorm``) over the last axis of (B, d) and (B, T, d)
inputs, with and without bias (torch; ``scale`` applies to flax only) / scale or bias (flax). torch's multi-axis ``normalized_shape`` and flax's
other reduction axes are not covered by the rule: the engine must fall back and still match."""
from __future__ import annotations

import numpy as np
import pytest
import torch.nn as nn
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st

from .checker import FRAMEWORKS, SETTINGS, abstract, check_case, seeds


def make_layernorm(framework: str, shape: tuple[int, ...], bias: bool, scale: bool) -> object:
    """Normalising the trailing ``len(shape)`` axes (covered: one)."""
    if framework == "torch":
        return nn.LayerNorm(shape, bias=bias)
    axes = tuple(range(-len(shape), 0))
    return abstract(lambda: nnx.LayerNorm(shape[-1], epsilon=1e-5, use_fast_variance=False, use_bias=bias,
                                          use_scale=scale, reduction_axes=axes if len(axes) > 1 else -1,
                                          rngs=nnx.Rngs(0)))


@pytest.mark.parametrize("framework", FRAMEWORKS)
@SETTINGS
@given(b=st.integers(1, 4), t=st.one_of(st.none(), st.integers(1, 5)), d=st.integers(2, 8), bias=st.booleans(),
       scale=st.booleans(), seed=seeds)
def test_layernorm(framework: str, b: int, t: int | None, d: int, bias: bool, scale: bool, seed: int) -> None:
    if framework == "jax" and not (bias or scale):
        scale = True  # an instance without either owns no parameter
    rng = np.random.default_rng(seed)
    shape = (b, d) if t is None else (b, t, d)
    check_case(make_layernorm(framework, (d,), bias, scale), rng.standard_normal(shape), rng, kind="layernorm")


@pytest.mark.parametrize("framework", FRAMEWORKS)
@SETTINGS
@given(b=st.integers(1, 4), t=st.integers(2, 4), d=st.integers(2, 5), seed=seeds)
def test_layernorm_two_axes_falls_back(framework: str, b: int, t: int, d: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    layer = make_layernorm(framework, (t, d), True, True)
    check_case(layer, rng.standard_normal((b, t, d)), rng, kind="layernorm", covered=False)
