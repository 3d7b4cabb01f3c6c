"""Any workload with its convolutions written as im2col patches + dot (same parameters as ``jax_impl.model``).

Why: under ``vmap(grad)`` the weight gradient of a ``lax.conv`` becomes a grouped (batch-group) convolution,
which XLA:CPU runs slowly (jax#13800). With patches + dot, the per-sample weight gradient is a batched matmul
and the only convolution left (the patch extraction) has no per-sample operand. Generic: every ``nnx.Conv`` of
the merged model gets ``patches_conv`` as its ``conv_general_dilated`` (Flax's hook for the conv function).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from contract.spec import DEFAULT_MODEL
from jax_impl.model import Net, resolve


def patches_conv(lhs: jax.Array, rhs: jax.Array, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                 dimension_numbers=None, feature_group_count: int = 1, precision=None, **kwargs) -> jax.Array:
    """``lax.conv_general_dilated``'s contract for Flax's 2-d NHWC / HWIO case, as patches + one dot.
    Grouped convolutions are passed through to lax (no patches form here)."""
    if feature_group_count != 1 or rhs.ndim != 4:
        return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                            dimension_numbers, feature_group_count, precision=precision, **kwargs)
    kh, kw, c_in, c_out = rhs.shape  # HWIO
    cols = jax.lax.conv_general_dilated_patches(
        lhs, (kh, kw), window_strides, padding, lhs_dilation, rhs_dilation,
        dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=precision,
    )  # (B, H', W', C_in*kh*kw), features in (C_in, kh, kw) order
    w = jnp.transpose(rhs, (2, 0, 1, 3)).reshape(c_in * kh * kw, c_out)
    return jnp.dot(cols, w, precision=precision)


def apply(params: nnx.State, x: jax.Array, model: str | Net = DEFAULT_MODEL) -> jax.Array:
    """Same function as ``jax_impl.model.apply`` (x -> logits), every convolution as patches + dot."""
    m = nnx.merge(resolve(model).graphdef, params)
    for _, node in nnx.iter_graph(m):
        if isinstance(node, nnx.Conv):
            node.conv_general_dilated = patches_conv
    return m(x)
