"""Layer classes shared by several workloads and by the per-layer rules (mirrors ``torch_impl.layers``), and the
precision every dot and convolution of this side uses.

A rule file imports its layer class from here, never from a workload (``jax_impl.models``), so a kind is one
rule file (rules and native layout) plus, where Flax has no module for it, one class here.
  LSTM                    a scan cell with PyTorch's two biases (flax's cells have one); kind "lstm".
  Projection              ``x @ kernel + bias`` with its PARENT's parameters; kind "projection".
  MultiheadSelfAttention  packed in-projection (d, 3d) through a ``Projection``, ``out_proj`` nnx.Linear.
  LearnedPositions        a (T, d) table added to (B, T, d) activations; kind "param_add".
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx
from jax_impl.precision import promote_linear

# Full float32 on every backend (no TF32 on GPUs), matching torch_impl which disables TF32.
PRECISION = jax.lax.Precision.HIGHEST


def recurrence(pre: jax.Array, kernel_hh: jax.Array) -> jax.Array:
    """Hidden states (B, T, H) from the input pre-activations ``pre`` = x kernel_ih + bias_ih + bias_hh
    (B, T, 4H), zero initial state: z_t = pre_t + h_{t-1} kernel_hh; i, f, g, o = sigma, sigma, tanh, sigma of
    its quarters (PyTorch's order); c_t = f c_{t-1} + i g; h_t = o tanh(c_t). One ``lax.scan`` over T."""
    b, _, four_h = pre.shape
    hidden = four_h // 4

    def step(carry: tuple[jax.Array, jax.Array], pre_t: jax.Array) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
        c, h = carry
        z = pre_t + jnp.matmul(h, kernel_hh, precision=PRECISION)
        i, f, g, o = jnp.split(z, 4, axis=1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (c, h), h

    zeros = jnp.zeros((b, hidden), pre.dtype)
    _, hs = jax.lax.scan(step, (zeros, zeros), jnp.swapaxes(pre, 0, 1))
    return jnp.swapaxes(hs, 0, 1)


class LSTM(nnx.Module):
    """One-layer batch-first LSTM with PyTorch's two biases; (B, T, in) -> (B, T, H)."""

    def __init__(self, in_features: int, hidden_features: int, *, rngs: nnx.Rngs) -> None:
        bound = 1.0 / hidden_features ** 0.5  # nn.LSTM's U(-1/sqrt(H), 1/sqrt(H)) (shared weights come from torch)
        uniform = lambda *shape: jax.random.uniform(rngs.params(), shape, jnp.float32, -bound, bound)  # noqa: E731
        self.in_features, self.hidden_features = in_features, hidden_features
        self.kernel_ih = nnx.Param(uniform(in_features, 4 * hidden_features))
        self.kernel_hh = nnx.Param(uniform(hidden_features, 4 * hidden_features))
        self.bias_ih = nnx.Param(uniform(4 * hidden_features))
        self.bias_hh = nnx.Param(uniform(4 * hidden_features))

    def pre_activations(self, x: jax.Array) -> jax.Array:
        """(B, T, 4H) = x kernel_ih + bias_ih + bias_hh."""
        bias = (self.bias_ih[...] + self.bias_hh[...]).reshape(1, 1, -1)  # explicit rank: promotion raises
        return jnp.einsum("btd,dg->btg", x, self.kernel_ih[...], precision=PRECISION) + bias

    def __call__(self, x: jax.Array) -> jax.Array:
        return recurrence(self.pre_activations(x), self.kernel_hh[...])


class LearnedPositions(nnx.Module):
    """A learned (T, d) table added to the (B, T, d) activations (rule kind "param_add")."""

    def __init__(self, seq_len: int, width: int, *, rngs: nnx.Rngs) -> None:
        self.weight = nnx.Param(0.02 * jax.random.normal(rngs.params(), (seq_len, width), jnp.float32))

    def __call__(self, h: jax.Array) -> jax.Array:
        return h + self.weight[...][None]


def attend(qkv: jax.Array, heads: int) -> jax.Array:
    """(B, T, 3d) packed [q | k | v] -> (B, T, d), as ``torch_impl.models.transformer.attend``."""
    b, t, three_d = qkv.shape
    hd = three_d // (3 * heads)
    q, k, v = (qkv.reshape(b, t, 3, heads, hd)[:, :, i] for i in range(3))  # each (B, T, H, hd)
    scores = jnp.einsum("bthd,bshd->bhts", q, k, precision=PRECISION) / math.sqrt(hd)
    out = jnp.einsum("bhts,bshd->bthd", jax.nn.softmax(scores, axis=-1), v, precision=PRECISION)
    return out.reshape(b, t, heads * hd)


class Projection(nnx.Module):
    """``x @ kernel + bias`` with its PARENT's parameters passed in; owns none (as torch's ``Projection``:
    the parent's site is recorded at this call, ``jax_impl.rules.site_module``, kind "projection")."""

    def __init__(self, kernel: str, bias: str | None) -> None:
        self.kernel_name, self.bias_name = kernel, bias
        self.applies = (kernel,) if bias is None else (kernel, bias)

    def __call__(self, x: jax.Array, kernel: jax.Array, bias: jax.Array | None) -> jax.Array:
        y = jnp.einsum("...d,de->...e", x, kernel, precision=PRECISION)
        return y if bias is None else y + bias.reshape((1,) * (y.ndim - 1) + bias.shape)


class MultiheadSelfAttention(nnx.Module):
    """Packed in-projection ``in_proj_kernel`` (d, 3d), ``in_proj_bias`` (3d,) applied by the parameter-free
    ``in_proj`` child, ``out_proj`` nnx.Linear."""

    def __init__(self, width: int, heads: int, *, rngs: nnx.Rngs) -> None:
        self.heads = heads
        self.in_proj_kernel = nnx.Param(nnx.initializers.xavier_uniform()(rngs.params(), (width, 3 * width)))
        self.in_proj_bias = nnx.Param(jnp.zeros(3 * width, jnp.float32))
        self.in_proj = Projection("in_proj_kernel", "in_proj_bias")
        self.out_proj = nnx.Linear(width, width, precision=PRECISION, promote_dtype=promote_linear, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        qkv = self.in_proj(x, self.in_proj_kernel[...], self.in_proj_bias[...])
        return self.out_proj(attend(qkv, self.heads))


def layer_norm(width: int, rngs: nnx.Rngs) -> nnx.LayerNorm:
    """torch's nn.LayerNorm: epsilon 1e-5; the two-pass variance E[(x - mean)^2]."""
    return nnx.LayerNorm(width, epsilon=1e-5, use_fast_variance=False, rngs=rngs)
