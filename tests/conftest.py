"""Shared fixtures: the seed-0 canonical weights and seeded batches (session-scoped: init costs ~0.1 s)."""
from __future__ import annotations

import numpy as np
import pytest

from compare.spec import make_batch
from compare.weights import init_weights


@pytest.fixture(scope="session")
def weights() -> dict[str, np.ndarray]:
    return init_weights(0)


@pytest.fixture(scope="session")
def batch() -> tuple[np.ndarray, np.ndarray]:
    """B=8 keeps the loop references fast; batch-size edge cases parametrise their own."""
    return make_batch(8, seed=1)
