"""What every JAX workload shares: full float32 precision, and the NCHW <-> NHWC boundary.

Inputs are NCHW like PyTorch; convolutions run NHWC (XLA's native layout). Before a flatten the feature map
goes back to NCHW, so every flattened vector is in torch's (C, H, W) order and a linear layer after it needs no
per-model permutation: the canonical <-> native conversion stays one rule per layer kind (``jax_impl.weights``).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

# Full float32 on every backend (no TF32 on GPUs), matching torch_impl which disables TF32.
PRECISION = jax.lax.Precision.HIGHEST


def nhwc(x: jax.Array) -> jax.Array:
    """(B, C, H, W) -> (B, H, W, C)."""
    return jnp.transpose(x, (0, 2, 3, 1))


def flatten_chw(h: jax.Array) -> jax.Array:
    """(B, H, W, C) -> (B, C*H*W) in torch.flatten's (C, H, W) order."""
    return jnp.transpose(h, (0, 3, 1, 2)).reshape(h.shape[0], -1)
