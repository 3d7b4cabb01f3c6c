"""Shared fixtures and strictness switches for the test suite.

Strict by default (as Equinox's conftest): JAX raises on implicit rank promotion, so a broadcast that
only works by accident (e.g. a bias of shape (C,) added to (B, H, W, C) without a reshape) fails here.
Python warnings raised by our own packages are errors (set in ``pytest_configure``).
"""
from __future__ import annotations

import jax
import numpy as np
import pytest
from hypothesis import settings

from compare.spec import make_batch
from compare.weights import init_weights
from helpers import BATCH_SEED, BATCH_SIZE

jax.config.update("jax_numpy_rank_promotion", "raise")

# No deadline: an example runs two frameworks' gradients (seconds, not milliseconds). Derandomised, so a CI
# run is reproducible. Each test sets its own (small) max_examples.
settings.register_profile("repo", deadline=None, derandomize=True)
settings.load_profile("repo")


def pytest_configure(config: pytest.Config) -> None:
    # Our own code must not warn; third-party deprecation noise (torch, jax, opacus internals) is not ours.
    for module in ("compare", "torch_impl", "jax_impl"):
        config.addinivalue_line("filterwarnings", f"error:::{module}")
    # torch 2.13 warns about its own use of torch.jit.script_method when Dynamo/Opacus load it.
    config.addinivalue_line("filterwarnings", r"ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")


@pytest.fixture(scope="session")
def weights() -> dict[str, np.ndarray]:
    """The seed's weights (PyTorch default init after ``torch.manual_seed(0)``). Shared by the whole session,
    so read-only: a test that edits them in place fails instead of changing what later tests see."""
    shared = init_weights(0)
    for arr in shared.values():
        arr.setflags(write=False)
    return shared


@pytest.fixture(scope="session")
def batch() -> tuple[np.ndarray, np.ndarray]:
    """B=8 keeps the loop references fast; batch-size edge cases make their own."""
    return make_batch(BATCH_SIZE, seed=BATCH_SEED)
