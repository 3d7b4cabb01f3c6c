"""What every JAX workload shares: full float32 precision, and the NCHW <-> NHWC boundary.

Inputs are NCHW like PyTorch; convolutions run NHWC (XLA's native layout). Before a flatten the feature map
goes back to NCHW, so every flattened vector is in torch's (C, H, W) order and a linear layer after it needs no
per-model permutation: the canonical <-> native conversion stays one rule per layer kind (``jax_impl.weights``).
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

import jax
import jax.numpy as jnp
from flax import nnx

from jax_impl.layers import PRECISION  # noqa: F401 - full float32 on every backend; re-exported


def nhwc(x: jax.Array) -> jax.Array:
    """(B, C, H, W) -> (B, H, W, C)."""
    return jnp.transpose(x, (0, 2, 3, 1))


def flatten_chw(h: jax.Array) -> jax.Array:
    """(B, H, W, C) -> (B, C*H*W) in torch.flatten's (C, H, W) order."""
    return jnp.transpose(h, (0, 3, 1, 2)).reshape(h.shape[0], -1)


# The models' non-smooth functions. Plain ``nnx.relu`` / ``nnx.max_pool`` unless ``jax_impl.decisions`` installs a
# hook (at trace time, around its own forwards only) to record or impose each call's decisions; torch needs no
# such helper (a TorchFunctionMode sees ``F.relu`` / ``F.max_pool2d``). Every ReLU and max-pool of a JAX model
# goes through these two, so that the float32 explanation finds them (``contract.sites``).
_DECISION_HOOK: ContextVar = ContextVar("decision_hook", default=None)


def relu(x: jax.Array) -> jax.Array:
    hook = _DECISION_HOOK.get()
    return nnx.relu(x) if hook is None else hook.relu(x)


def max_pool(x: jax.Array, window_shape: tuple[int, int], strides: tuple[int, int]) -> jax.Array:
    """NHWC max-pool, no padding (``nnx.max_pool``'s "VALID")."""
    hook = _DECISION_HOOK.get()
    return nnx.max_pool(x, window_shape, strides=strides) if hook is None else hook.max_pool(x, window_shape, strides)


@contextmanager
def decision_hook(hook: object) -> Iterator[None]:
    """Route ``relu`` / ``max_pool`` calls to ``hook.relu(x)`` / ``hook.max_pool(x, window, strides)``."""
    token = _DECISION_HOOK.set(hook)
    try:
        yield
    finally:
        _DECISION_HOOK.reset(token)
