"""Kind "groupnorm" (torch ``nn.GroupNorm`` NC*, flax ``nnx.GroupNorm`` N*C; affine) over the number of groups
(1, some, one channel each), channels per group and spatial sizes (no position axis, one, two)."""
from __future__ import annotations

import numpy as np
import pytest
import torch.nn as nn
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st

from .checker import FRAMEWORKS, SETTINGS, abstract, check_case, seeds


@pytest.mark.parametrize("framework", FRAMEWORKS)
@SETTINGS
@given(b=st.integers(1, 4), groups=st.integers(1, 3), per_group=st.integers(1, 3),
       spatial=st.lists(st.integers(1, 4), min_size=0, max_size=2), seed=seeds)
def test_groupnorm(framework: str, b: int, groups: int, per_group: int, spatial: list[int], seed: int) -> None:
    c = groups * per_group
    if c * int(np.prod(spatial)) // groups < 2:
        spatial = [2]  # one value per group normalises to 0: the weight's gradient would be 0 on any rule
    rng = np.random.default_rng(seed)
    if framework == "torch":
        layer = nn.GroupNorm(groups, c)
        shape = (b, c, *spatial)
    else:
        layer = abstract(lambda: nnx.GroupNorm(c, num_groups=groups, epsilon=1e-5, use_fast_variance=False,
                                               rngs=nnx.Rngs(0)))
        shape = (b, *spatial, c)
    check_case(layer, rng.standard_normal(shape), rng, kind="groupnorm")
