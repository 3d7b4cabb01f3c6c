"""The checker must fail on a wrong rule: each of a kind's three rules, made wrong by a factor of 1.01 (far above
the float64 tolerance, far below a gross error), or declining an instance it is said to cover, is patched into
the registry for one linear layer; ``check_rules`` must raise. Without this, a checker that compared the
fallback with itself would pass every kind."""
from __future__ import annotations

from typing import Any, Callable
from unittest import mock

import numpy as np
import pytest
import torch.nn as nn
from flax import nnx

from .checker import FRAMEWORKS, abstract, check_case, rules_of

WRONG = 1.01


def _scaled(rule: Callable, what: str) -> Callable:
    """``rule`` with its result (every leaf, or the norms) times ``WRONG``."""
    def wrong(*args: Any, **kwargs: Any) -> Any:
        out = rule(*args, **kwargs)
        if out is None:
            return None
        return {k: v * WRONG for k, v in out.items()} if isinstance(out, dict) else out * WRONG
    wrong.__name__ = f"wrong_{what}"
    return wrong


def _layer(framework: str) -> tuple[object, type]:
    if framework == "torch":
        return nn.Linear(3, 2), nn.Linear
    return abstract(lambda: nnx.Linear(3, 2, rngs=nnx.Rngs(0))), nnx.Linear


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("table", ["GRAD_SAMPLERS", "NORM_SAMPLERS", "SUM_SAMPLERS"])
def test_a_wrong_rule_fails(framework: str, table: str) -> None:
    layer, cls = _layer(framework)
    registry = getattr(rules_of(framework), table)
    rng = np.random.default_rng(0)
    with mock.patch.dict(registry, {cls: _scaled(registry[cls], table)}):
        with pytest.raises(AssertionError, match="max error"):
            check_case(layer, rng.standard_normal((3, 4, 3)), rng, kind="linear", route="linear")


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_rule_that_declines_a_covered_instance_fails(framework: str) -> None:
    """The grad rule returning None (the engine falls back: right numbers) must still fail where the instance is
    said to be covered: otherwise every kind could pass by falling back."""
    layer, cls = _layer(framework)
    registry = rules_of(framework).GRAD_SAMPLERS
    rng = np.random.default_rng(0)
    with mock.patch.dict(registry, {cls: lambda *args, **kwargs: None}):
        with pytest.raises(AssertionError, match="called the fallback"):
            check_case(layer, rng.standard_normal((3, 4, 3)), rng, kind="linear", route="linear")


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_the_unpatched_rule_passes(framework: str) -> None:
    """The same case with the registered rules passes (so the failures above come from the patch)."""
    layer, _ = _layer(framework)
    rng = np.random.default_rng(0)
    check_case(layer, rng.standard_normal((3, 4, 3)), rng, kind="linear", route="linear")
