"""Layer classes shared by several workloads and by the per-layer rules (mirrors ``torch_impl.layers``), and the
precision every dot and convolution of this side uses.

A rule file imports its layer class from here, never from a workload (``jax_impl.models``), so a kind is one
rule file (rules and native layout) plus, where Flax has no module for it, one class here.
  LSTM                    a scan cell with PyTorch's two biases (flax's cells have one); kind "lstm", recorded at
                          its ``GateInput``.
  GateInput               the LSTM's input projection x kernel_ih + bias_ih + bias_hh with its PARENT's parameters.
  Projection              ``x @ kernel + bias`` with its PARENT's parameters; kind "projection".
  MultiheadSelfAttention  packed in-projection (d, 3d) through a ``Projection``, ``out_proj`` nnx.Linear.
  LearnedPositions        a (T, d) table added to (B, T, d) activations; kind "param_add".
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx
from jax_impl.precision import promote_linear, wide

# Full float32 on every backend (no TF32 on GPUs), matching torch_impl which disables TF32.
PRECISION = jax.lax.Precision.HIGHEST


def _mm(a: jax.Array, w: jax.Array) -> jax.Array:
    """a @ w as torch's autocast computes it: a cast to w's dtype, accumulated in ``wide`` (float32 for bfloat16),
    the result in w's dtype (an explicit float32 accumulator: XLA:CPU accumulates some bfloat16 dots in bfloat16)."""
    return jnp.matmul(a.astype(w.dtype), w, precision=PRECISION,
                      preferred_element_type=wide(w.dtype, "dot")).astype(w.dtype)


def _scan(pre: jax.Array, kernel_hh: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Time-major (h, c (T, B, H), gate activations i, f, g, o (T, B, 4H)) of the recurrence below. The state is
    kept in pre's dtype (torch: the same, ``torch_impl.layers._steps``): float32 in bfloat16, where ``GateInput``
    adds the biases in float32; z_t = pre_t + h_{t-1} kernel_hh is one product of bfloat16 operands (pre_t rounded
    first), accumulated in float32 and rounded (torch's autocast ``addmm``), so the gates are bfloat16."""
    b, _, four_h = pre.shape
    hidden = four_h // 4
    low, acc = kernel_hh.dtype, wide(kernel_hh.dtype, "dot")

    def step(carry: tuple[jax.Array, jax.Array], pre_t: jax.Array) -> tuple[tuple[jax.Array, jax.Array], tuple]:
        c, h = carry
        z = (pre_t.astype(low).astype(acc) + jnp.matmul(h.astype(low), kernel_hh, precision=PRECISION,
                                                        preferred_element_type=acc)).astype(low)
        i, f, g, o = jnp.split(z, 4, axis=1)
        i, f, g, o = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)
        c = f * c + i * g
        h = o * jnp.tanh(c)
        return (c, h), (h, c, jnp.concatenate([i, f, g, o], axis=1))

    zeros = jnp.zeros((b, hidden), pre.dtype)
    _, (hs, cs, acts) = jax.lax.scan(step, (zeros, zeros), jnp.swapaxes(pre, 0, 1))
    return hs, cs, acts


@jax.custom_vjp
def recurrence(pre: jax.Array, kernel_hh: jax.Array) -> jax.Array:
    """Hidden states (B, T, H) from the input pre-activations ``pre`` = x kernel_ih + bias_ih + bias_hh
    (B, T, 4H), zero initial state: z_t = pre_t + h_{t-1} kernel_hh; i, f, g, o = sigma, sigma, tanh, sigma of
    its quarters (PyTorch's order); c_t = f c_{t-1} + i g; h_t = o tanh(c_t). One ``lax.scan`` over T.

    Its backward (``_recurrence_bwd``) is one reverse scan for dz_t, then d kernel_hh = sum_t h_{t-1}^T dz_t as ONE
    (H x BT) (BT x 4H) matmul. Why written out: ``jax.grad`` of the scan accumulates d kernel_hh inside the
    reverse loop, a (H x B) (B x 4H) product and an add per step: the lstm workload's SGD step with it was 1.1-1.3x
    the step with this backward (``scripts/sgd_formulations.py``, paper/perf-sgd/)."""
    return jnp.swapaxes(_scan(pre, kernel_hh)[0], 0, 1)


def _recurrence_fwd(pre: jax.Array, kernel_hh: jax.Array) -> tuple[jax.Array, tuple]:
    hs, cs, acts = _scan(pre, kernel_hh)
    return jnp.swapaxes(hs, 0, 1), (hs, cs, acts, kernel_hh)


def _recurrence_bwd(res: tuple, g: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(d pre = dz (B, T, 4H), d kernel_hh (H, 4H)) from the output cotangent g (B, T, H)."""
    hs, cs, acts, kernel_hh = res
    c_prev = jnp.concatenate([jnp.zeros_like(cs[:1]), cs[:-1]], axis=0)

    def step(carry: tuple[jax.Array, jax.Array], xs: tuple) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
        dh_next, dc_next = carry  # d/dh_t through h_t's use at t + 1; d/dc_t through c_t+1
        g_t, c_t, c_p, a_t = xs
        i, f, gg, o = jnp.split(a_t, 4, axis=1)
        dh = g_t + dh_next
        tc = jnp.tanh(c_t)
        dc = dc_next + dh * o * (1 - tc * tc)
        dz = jnp.concatenate([dc * gg * i * (1 - i), dc * c_p * f * (1 - f), dc * i * (1 - gg * gg),
                              dh * tc * o * (1 - o)], axis=1)
        return (_mm(dz, kernel_hh.T).astype(dh.dtype), dc * f), dz

    zeros = jnp.zeros_like(hs[0])
    _, dz = jax.lax.scan(step, (zeros, zeros), (jnp.swapaxes(g, 0, 1), cs, c_prev, acts), reverse=True)
    h_prev = jnp.concatenate([jnp.zeros_like(hs[:1]), hs[:-1]], axis=0)
    d_kernel = _mm(h_prev.reshape(-1, hs.shape[2]).T, dz.reshape(-1, dz.shape[2]).astype(kernel_hh.dtype))
    return jnp.swapaxes(dz, 0, 1), d_kernel


recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


class GateInput(nnx.Module):
    """The LSTM's gate input pre-activations x kernel_ih + bias_ih + bias_hh (B, T, 4H), with its PARENT's
    parameters; owns none (as torch's ``GateInput``: the engine records the LSTM at this call, whose output
    cotangent is the gate pre-activations' cotangent; ``jax_impl.rules.lstm``)."""

    applies = ("kernel_ih", "kernel_hh", "bias_ih", "bias_hh")

    def __call__(self, x: jax.Array, kernel_ih: jax.Array, bias_ih: jax.Array, bias_hh: jax.Array) -> jax.Array:
        """In bfloat16 (torch's autocast: the same), x kernel_ih accumulated in float32 and rounded, the biases
        added in float32: the result, the LSTM's state and their cotangents are float32 (docs/precision.md)."""
        low = kernel_ih.dtype
        y = jnp.einsum("btd,dg->btg", x, kernel_ih, precision=PRECISION,
                       preferred_element_type=wide(low, "dot")).astype(low)
        b = wide(low, "bias")
        return y + (bias_ih.astype(b) + bias_hh.astype(b)).reshape(1, 1, -1)  # explicit rank: promotion raises


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
        self.gates = GateInput()

    def __call__(self, x: jax.Array) -> jax.Array:
        pre = self.gates(x, self.kernel_ih[...], self.bias_ih[...], self.bias_hh[...])
        return recurrence(pre, self.kernel_hh[...])


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
