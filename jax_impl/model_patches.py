"""The seed CNN with its convolutions written as im2col patches + dot (same parameters as ``jax_impl.model``).

Why: under ``vmap(grad)`` the weight gradient of a ``lax.conv`` becomes a grouped (batch-group) convolution,
which XLA:CPU runs slowly (jax#13800). With patches + dot, the per-sample weight gradient is a batched matmul
and the only convolution left (the patch extraction) has no per-sample operand.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jax_impl.model import GRAPHDEF, PRECISION


def conv_as_patches(conv: nnx.Conv, x: jax.Array) -> jax.Array:
    """A VALID, stride-1 ``nnx.Conv`` as patches + dot. x: (B, H, W, C_in) NHWC -> (B, H', W', C_out)."""
    kh, kw, c_in, c_out = conv.kernel.shape  # HWIO
    cols = jax.lax.conv_general_dilated_patches(
        x, (kh, kw), (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=PRECISION
    )  # (B, H', W', C_in*kh*kw), features in (C_in, kh, kw) order
    w = jnp.transpose(conv.kernel[...], (2, 0, 1, 3)).reshape(c_in * kh * kw, c_out)
    return jnp.dot(cols, w, precision=PRECISION) + conv.bias[...].reshape(1, 1, 1, c_out)


def apply(params: nnx.State, x: jax.Array) -> jax.Array:
    """Same function as ``jax_impl.model.apply`` (x: (B, 1, 28, 28) NCHW -> logits (B, 10)), convs as patches."""
    m = nnx.merge(GRAPHDEF, params)
    h = jnp.transpose(x, (0, 2, 3, 1))  # NCHW -> NHWC
    h = nnx.relu(conv_as_patches(m.conv1, h))
    h = nnx.relu(conv_as_patches(m.conv2, h))
    h = nnx.max_pool(h, (2, 2), strides=(2, 2))
    h = h.reshape(h.shape[0], -1)  # (H, W, C) order, as jax_impl.model
    h = nnx.relu(m.fc1(h))
    return m.fc2(h)
