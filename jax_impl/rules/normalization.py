"""What the normalisation kinds share (``layernorm``, ``groupnorm``; no kind of its own; mirrors
``torch_impl.rules.normalization``).

y = x^ * scale + bias per channel, with x^ recomputed from the layer input a, so per example
  grad    scale_b = sum_p x^_bp g_bp,  bias_b = sum_p g_bp   over the positions p   ((B, C) each)
  norm    ||scale_b||^2 + ||bias_b||^2 of those (B x C values: nothing cheaper to avoid)
  sum     scale = sum_{b,p} w_b x^_bp g_bp,  bias = sum_{b,p} w_b g_bp.
A kind's file gives how it normalises (``parts``: x^ g and g, (B, P, C)) and which instances its rule covers;
``register_affine_normalization`` registers the three rules and the layout (scale <- weight, bias <- bias).
"""
from __future__ import annotations

from typing import Callable

import jax
from flax import nnx

from jax_impl.rules import (Leaves, register_clipped_sum, register_grad_sampler, register_layout,
                            register_norm_sampler, sq)

Parts = Callable[[nnx.Module, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


def _leaves(layer: nnx.Module, scale: jax.Array, bias: jax.Array) -> Leaves:
    out = {}
    if layer.scale is not None:
        out["scale"] = scale
    if layer.bias is not None:
        out["bias"] = bias
    return out


def register_affine_normalization(kind: str, layer_type: type[nnx.Module], parts: Parts,
                                  covered: Callable[[nnx.Module], bool]) -> tuple[Callable, Callable, Callable]:
    """Registers ``kind``'s layout, grad sampler, norm sampler and clipped sum for ``layer_type`` and returns the
    rules. parts(layer, a, g) -> (x^ * g, g), both (B, P, C); ``covered(layer)``: False -> the rules return None
    and the fallback materialises the layer."""
    register_layout({"scale": ("weight", None), "bias": ("bias", None)}, layer_type)

    @register_grad_sampler(kind, layer_type)
    def grad_sample(layer: nnx.Module, a: jax.Array, g: jax.Array) -> Leaves | None:
        if not covered(layer):
            return None
        xg, g3 = parts(layer, a, g)
        return _leaves(layer, xg.sum(axis=1), g3.sum(axis=1))

    @register_norm_sampler(kind, layer_type)
    def norm_sq(layer: nnx.Module, a: jax.Array, g: jax.Array) -> jax.Array | None:
        grads = grad_sample(layer, a, g)
        return None if grads is None else sum(sq(v) for v in grads.values())

    @register_clipped_sum(kind, layer_type)
    def clipped_sum(layer: nnx.Module, a: jax.Array, g: jax.Array, w: jax.Array) -> Leaves:
        xg, g3 = parts(layer, a, g)
        w3 = w[:, None, None]
        return _leaves(layer, (w3 * xg).sum(axis=(0, 1)), (w3 * g3).sum(axis=(0, 1)))

    return grad_sample, norm_sq, clipped_sum
