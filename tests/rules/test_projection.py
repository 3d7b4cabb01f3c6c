"""Kind "projection": a parent that owns a weight (and bias) and applies them all through its one parameter-free
``Projection`` child (``torch_impl.layers`` / ``jax_impl.layers``; the attention's packed in-projection). The
parent here does nothing else, so its own vmap fallback at the child's (input, output cotangent) is the
reference; inputs (B, d) and (B, T, d), with and without bias, every norm route of the linear cost model. Leaves
keep the parent's names (``in_proj_weight`` / ``in_proj_kernel``)."""
from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
import torch.nn as nn
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st

from .checker import FRAMEWORKS, SETTINGS, abstract, check_case, kind_type, seeds


class TorchParent(nn.Module):
    """Owns in_proj_weight (p, d) and in_proj_bias (p,) (or no bias); applies them through the child only."""

    def __init__(self, d: int, p: int, bias: bool) -> None:
        super().__init__()
        self.in_proj_weight = nn.Parameter(torch.empty(p, d))
        self.in_proj_bias = nn.Parameter(torch.empty(p)) if bias else None
        self.in_proj = kind_type("torch", "projection")("in_proj_weight", "in_proj_bias" if bias else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.in_proj(x, self.in_proj_weight, self.in_proj_bias)


class JaxParent(nnx.Module):
    """Owns in_proj_kernel (d, p) and in_proj_bias (p,) (or no bias); applies them through the child only."""

    def __init__(self, d: int, p: int, bias: bool) -> None:
        self.in_proj_kernel = nnx.Param(jax.numpy.zeros((d, p)))
        if bias:
            self.in_proj_bias = nnx.Param(jax.numpy.zeros(p))
        self.in_proj = kind_type("jax", "projection")("in_proj_kernel", "in_proj_bias" if bias else None)

    def __call__(self, x: jax.Array) -> jax.Array:
        bias = self.in_proj_bias[...] if hasattr(self, "in_proj_bias") else None
        return self.in_proj(x, self.in_proj_kernel[...], bias)


@pytest.mark.parametrize("framework", FRAMEWORKS)
@SETTINGS
@given(b=st.integers(1, 4), t=st.one_of(st.none(), st.integers(1, 5)), d=st.integers(1, 6), p=st.integers(1, 6),
       bias=st.booleans(), seed=seeds)
def test_projection(framework: str, b: int, t: int | None, d: int, p: int, bias: bool, seed: int) -> None:
    layer = TorchParent(d, p, bias) if framework == "torch" else abstract(lambda: JaxParent(d, p, bias))
    rng = np.random.default_rng(seed)
    shape = (b, d) if t is None else (b, t, d)
    check_case(layer, rng.standard_normal(shape), rng, kind="projection", route="linear")
