"""nnx.Conv (2-d, HWIO kernel, NHWC input), any kernel, strides, explicit/SAME/VALID padding, kernel dilation,
bias (feature_group_count = 1, no input dilation or mask; other instances fall back). Mirrors
``torch_impl.rules.conv``.

  grad    kernel tap (i, j) = the batched matmul  u_ij^T g  over the H'W' output positions, u_ij the input
          slice that tap reads (strided, dilated): k*k dots on shifted slices, no im2col buffer, run as a
          ``lax.scan`` over taps so ONE slice is live at a time. Measured (seed conv2, float32, XLA:CPU):
          ``lax.conv_general_dilated_patches`` + einsum was 2-3x slower (its patches are a grouped
          convolution, jax#13800): 128 vs 43-56 ms at B=64, 380 vs 190-215 ms at B=256 (medians of 7); one
          stacked (B, H'W', 9 C_in) im2col matmul was in between (72-101 / 280-300 ms); a conv with the samples
          as feature groups was slowest. The scan vs the unrolled taps: 20 vs 148 MiB of temporaries at B=256
          (XLA materialised all nine slices first), 317 vs 355 ms min of 5;
  norm    "materialize" (the grad above, then its norm) or "gram" (sum_{p,q} <u_p,u_q><g_p,g_q> from (B, P, P)
          Gram matrices), chosen per layer by ``contract.cost_model.norm_route("conv", P, d, p)`` (Bu, Mao & Xu
          2022; the slack 2.5 measured on every workload's convs, paper/cpu-costmodel/). Measured on the
          seed CNN (float32, min of 3-5, 2-core Intel box shared with other jobs, the rule alone on (a, g)):
            conv1  materialize   3.4 ms (B=64)   13 ms (B=256)   gram   289 ms (B=64)  2043 ms (B=256)
            conv2  materialize    40 ms (B=64)  288 ms (B=256)   gram  1260 ms (B=64)  6192 ms (B=256)
          as the cost model ranks them (gram 96x / 11x dearer);
  sum     (gram layers only; materialised ones are summed from their per-example grads by the engine): per
          tap one (C_in, C_out) matmul over samples AND positions. On XLA:CPU such long contractions run at
          ~6-9 GFLOP/s: seed conv2, B=64, 160-240 ms (nine dots, one im2col matmul, or batched dots summed)
          against 37-57 ms for the per-example taps plus a weighted sum, so for layers the cost model would
          give to gram that contraction can still dominate; measured per layer, not assumed.
``contract.cost_model.forced_routes(conv=...)`` forces one rule for every conv layer (tests, measurements).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn.linear import canonicalize_padding

from jax_impl.layers import PRECISION
from contract.cost_model import norm_route
from jax_impl.rules import (Leaves, register_clipped_sum, register_grad_sampler, register_layout,
                            register_norm_sampler, sq)

OIHW_TO_HWIO = (2, 3, 1, 0)  # native kernel HWIO <- canonical weight OIHW
register_layout({"kernel": ("weight", OIHW_TO_HWIO), "bias": ("bias", None)}, nnx.Conv)

Geometry = tuple[tuple[int, int], tuple[int, int], tuple[tuple[int, int], tuple[int, int]]]


def _pair(v: object) -> tuple[int, int]:
    if v is None:
        return (1, 1)
    return (v, v) if isinstance(v, int) else tuple(v)


def _geometry(layer: nnx.Conv, a: jax.Array) -> Geometry | None:
    """(strides, kernel dilation, explicit pads) or None when the rule does not cover this instance."""
    if (len(layer.kernel_shape) != 4 or layer.feature_group_count != 1 or layer.mask is not None
            or _pair(layer.input_dilation) != (1, 1) or a.ndim != 4):
        return None
    strides, dilation = _pair(layer.strides), _pair(layer.kernel_dilation)
    pads = canonicalize_padding(layer.padding, 2)
    if isinstance(pads, str):
        if pads not in ("SAME", "VALID"):
            return None
        extent = [(k - 1) * d + 1 for k, d in zip(layer.kernel_shape[:2], dilation)]
        pads = jax.lax.padtype_to_pads(a.shape[1:3], extent, strides, pads)
    pads = tuple(tuple(int(q) for q in p) for p in pads)
    return None if any(q < 0 for p in pads for q in p) else (strides, dilation, pads)


def _padded(a: jax.Array, pads: tuple) -> jax.Array:
    return jnp.pad(a, ((0, 0), pads[0], pads[1], (0, 0)))


def _tap(ap: jax.Array, i: int, j: int, geometry: Geometry, out_hw: tuple[int, int]) -> jax.Array:
    """(B, H'W', C_in): the input values kernel tap (i, j) meets at every output position (static slice)."""
    (sh, sw), (dh, dw), _ = geometry
    h, w = out_hw
    start = (0, i * dh, j * dw, 0)
    limit = (ap.shape[0], i * dh + (h - 1) * sh + 1, j * dw + (w - 1) * sw + 1, ap.shape[3])
    return jax.lax.slice(ap, start, limit, (1, sh, sw, 1)).reshape(ap.shape[0], h * w, -1)


def conv_taps(layer: nnx.Conv, a: jax.Array, g: jax.Array, geometry: Geometry) -> tuple[jax.Array, jax.Array]:
    """Per-example kernel taps (kh*kw, B, C_in, C_out) (tap (i, j) row-major) and bias grads (B, C_out)."""
    (sh, sw), (dh, dw), pads = geometry
    kh, kw = layer.kernel_shape[:2]
    b, h, w, c_out = g.shape
    ap = _padded(a, pads)
    gm = g.reshape(b, h * w, c_out)
    dims = (((1,), (1,)), ((0,), (0,)))  # contract positions, batch over samples
    size = (b, (h - 1) * sh + 1, (w - 1) * sw + 1, ap.shape[3])

    def tap(_: None, ij: jax.Array) -> tuple[None, jax.Array]:
        region = jax.lax.dynamic_slice(ap, (0, ij[0] * dh, ij[1] * dw, 0), size)
        t = region[:, ::sh, ::sw, :].reshape(b, h * w, -1)
        return None, jax.lax.dot_general(t, gm, dims, precision=PRECISION)

    offsets = jnp.array([(i, j) for i in range(kh) for j in range(kw)])
    _, taps = jax.lax.scan(tap, None, offsets)
    return taps, gm.sum(axis=1)


def norm_rule(layer: nnx.Conv, g: jax.Array) -> str:
    """"gram" or "materialize" for this layer at output cotangent g (B, H', W', C_out)."""
    kh, kw, c_in, c_out = layer.kernel_shape
    return norm_route("conv", g.shape[1] * g.shape[2], kh * kw * c_in, c_out)


def _with_bias(layer: nnx.Conv, kernel: jax.Array, bias: jax.Array) -> Leaves:
    return {"kernel": kernel, "bias": bias} if layer.bias is not None else {"kernel": kernel}


@register_grad_sampler("conv", nnx.Conv)
def conv_grad_sample(layer: nnx.Conv, a: jax.Array, g: jax.Array) -> Leaves | None:
    """a: (B, H, W, C_in), g: (B, H', W', C_out) -> kernel (B, kh, kw, C_in, C_out) HWIO, bias (B, C_out)."""
    geometry = _geometry(layer, a)
    if geometry is None:
        return None
    taps, bias = conv_taps(layer, a, g, geometry)
    kh, kw, c_in, c_out = layer.kernel_shape
    kernel = jnp.moveaxis(taps, 1, 0).reshape(g.shape[0], kh, kw, c_in, c_out)
    return _with_bias(layer, kernel, bias)


def gram_norm_sq(layer: nnx.Conv, a: jax.Array, g: jax.Array, geometry: Geometry) -> jax.Array:
    """(B,) the kernel norm as sum_{p,q} <u_p,u_q> <g_p,g_q> (+ the bias norm)."""
    b, h, w, c_out = g.shape
    kh, kw = layer.kernel_shape[:2]
    ap = _padded(a, geometry[2])
    gm = g.reshape(b, h * w, c_out)
    dims = (((2,), (2,)), ((0,), (0,)))  # contract channels, batch over samples -> (B, P, P)
    gram_u = sum(jax.lax.dot_general(t, t, dims, precision=PRECISION)
                 for t in (_tap(ap, i, j, geometry, (h, w)) for i in range(kh) for j in range(kw)))
    gram_g = jax.lax.dot_general(gm, gm, dims, precision=PRECISION)
    out = (gram_u * gram_g).sum(axis=(1, 2))
    return out + sq(gm.sum(axis=1)) if layer.bias is not None else out


@register_norm_sampler("conv", nnx.Conv)
def conv_norm_sq(layer: nnx.Conv, a: jax.Array, g: jax.Array) -> jax.Array | None:
    geometry = _geometry(layer, a)
    if geometry is None or norm_rule(layer, g) == "materialize":
        return None
    return gram_norm_sq(layer, a, g, geometry)


@register_clipped_sum("conv", nnx.Conv)
def conv_clipped_sum(layer: nnx.Conv, a: jax.Array, g: jax.Array, w: jax.Array) -> Leaves:
    geometry = _geometry(layer, a)
    b, h, wd, c_out = g.shape
    kh, kw, c_in, _ = layer.kernel_shape
    gc = (g * w[:, None, None, None]).reshape(b * h * wd, c_out)
    ap = _padded(a, geometry[2])
    dims = (((0,), (0,)), ((), ()))
    taps = [jax.lax.dot_general(_tap(ap, i, j, geometry, (h, wd)).reshape(b * h * wd, -1), gc, dims,
                                precision=PRECISION) for i in range(kh) for j in range(kw)]
    return _with_bias(layer, jnp.stack(taps).reshape(kh, kw, c_in, c_out), gc.sum(axis=0))
