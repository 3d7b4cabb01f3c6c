"""Kind "param_add": a module that adds its one (T, d) parameter to the (B, T, d) activations (learned positions;
the layer class is the one registered for the kind). Each example's gradient is its own output cotangent."""
from __future__ import annotations

import numpy as np
import pytest
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st

from .checker import FRAMEWORKS, SETTINGS, abstract, check_case, kind_type, seeds


@pytest.mark.parametrize("framework", FRAMEWORKS)
@SETTINGS
@given(b=st.integers(1, 4), t=st.integers(1, 6), d=st.integers(1, 8), seed=seeds)
def test_param_add(framework: str, b: int, t: int, d: int, seed: int) -> None:
    cls = kind_type(framework, "param_add")
    layer = cls(t, d) if framework == "torch" else abstract(lambda: cls(t, d, rngs=nnx.Rngs(0)))
    rng = np.random.default_rng(seed)
    check_case(layer, rng.standard_normal((b, t, d)), rng, kind="param_add")
