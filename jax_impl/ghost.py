"""Per-example gradient norms and clipped sums WITHOUT per-example gradients (mirrors ``torch_impl.ghost``).

DP-SGD needs each example's gradient norm and the clipped sum ``sum_b m_b c_b g_b``, never the (B x 1.2M)
per-example tensor. Both strategies here start from ``per_layer``'s one forward and one backward to the layer
OUTPUTS (zero probes on the outputs, ``jax.grad`` of the SUM of per-example losses, so each cotangent g_b is
that example's own), with each layer's input a_b kept:

Norms (``layer_norms_sq``), per layer, exact because every layer is applied once per example:
  linear (kernel a_b g_b^T, bias g_b):  ||dW_b||^2 + ||db_b||^2 = ||g_b||^2 (||a_b||^2 + 1)   (Goodfellow 2015);
  conv:  ``CONV_NORM_RULES[layer]``, measured below: "materialize" writes that layer's (small: 288 / 18432
         weights) per-example weight gradient (per_layer's shifted-slice batched dots, ``conv_taps``) and takes
         its norm; "gram" is the ghost norm sum_{p,q} <u_p,u_q><g_p,g_q> over output positions (u_p = the 3x3
         input patch), from (B, P, P) Gram matrices (Li et al. 2021; Bu, Mao & Xu 2022 pick per layer).
Clipped sums:
  ``ghost_clipped_sum``: a SECOND batched backward of sum_b m_b c_b loss_b (c under stop_gradient): plain
      ``jax.grad`` of the model, so it pays XLA:CPU's convolution backward-filter, as ``dp.make_sgd_step`` does;
  ``bk_clipped_sum`` (book-keeping, Bu et al. 2023): each layer's clipped sum straight from (a, c m g), no
      second backward: linear kernel a^T (c m g) (one matmul), bias sum_b c_b m_b g_b; conv: the weighted sum
      sum_b c_b m_b dW_b of the per-example gradient the norm rule already wrote (Bu et al.'s mixed variant;
      contracting samples AND positions in one matmul measured 3-4x slower on XLA:CPU, see ``_conv_sum``).
      Neither conv route touches XLA's backward-filter convolution, the slow part of JAX's own SGD step here.

Masks: ``m_b`` scales the clip factor (c_b m_b), not the loss, so the result is sum_b m_b c_b g_b for any
float mask with c_b from the unmasked gradient (for 0/1 masks the same as masking the loss, torch's choice).
Flax kernels are (in, out) / HWIO; conv inputs and cotangents are NHWC. Every dot uses ``model.PRECISION``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jax_impl.model import PRECISION, apply, loss_fn
from jax_impl.per_layer import KERNEL, forward_to_outputs, output_shapes

Params = nnx.State
Arrays = dict[str, jax.Array]
LINEAR_LAYERS: tuple[str, ...] = ("fc1", "fc2")
CONV_LAYERS: tuple[str, ...] = ("conv1", "conv2")

# Chosen by measurement, per layer: the Gram rule costs P^2 (C_in k^2 + C_out) per example against
# P C_in k^2 C_out for materialising (P = 676 / 576 output positions), and measured (float32, min of 3-5, this
# 2-core Intel box shared with other jobs, the rule alone on the layer's (a, g)):
#   conv1  materialize   3.4 ms (B=64)   13 ms (B=256)   gram   289 ms (B=64)  2043 ms (B=256)
#   conv2  materialize    40 ms (B=64)  288 ms (B=256)   gram  1260 ms (B=64)  6192 ms (B=256)
# so "materialize" for both. ("gram" stays selectable and tested: it is the rule that wins for layers with
# few positions and wide channels, where P^2 < k^2 C_in C_out.)
CONV_NORM_RULES: dict[str, str] = {"conv1": "materialize", "conv2": "materialize"}


def example_losses(logits: jax.Array, y: jax.Array, loss: str) -> jax.Array:
    """(B,) each example's own loss: ``model.loss_fn`` of a batch of one, row by row."""
    return jax.vmap(lambda lg, t: loss_fn(lg[None], t[None], loss))(logits, y)


def factors_from_norms(norms: jax.Array, clip: float) -> jax.Array:
    """(B,) clip factors ``min(1, clip / n)``, NaN -> 1: ``dp.clip_factors``' formula (clip = inf -> 1)."""
    return jnp.nan_to_num(jnp.minimum(clip / norms, 1.0), nan=1.0)


def _outputs(params: Params, x: jax.Array, y: jax.Array, loss: str) -> tuple[Arrays, Arrays, jax.Array]:
    """(layer inputs, per-example output cotangents, (B,) per-example losses) from one forward + backward."""
    probes = {k: jnp.zeros(s, x.dtype) for k, s in output_shapes(x.shape[0]).items()}

    def total(p: Arrays) -> tuple[jax.Array, tuple[Arrays, jax.Array]]:
        logits, inputs = forward_to_outputs(params, x, p)
        losses = example_losses(logits, y, loss)
        return losses.sum(), (inputs, losses)  # the sum: each example's cotangent is its own gradient

    cots, (inputs, losses) = jax.grad(total, has_aux=True)(probes)
    return inputs, cots, losses


def _taps(a: jax.Array, h: int, w: int) -> list[jax.Array]:
    """The nine shifted (B, H'W', C_in) input slices, one per kernel tap (i, j), row-major as HWIO."""
    b = a.shape[0]
    return [a[:, i:i + h, j:j + w, :].reshape(b, h * w, -1) for i in range(KERNEL) for j in range(KERNEL)]


def conv_taps(a: jax.Array, g: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-example conv gradient: kernel taps (k*k, B, C_in, C_out) (tap t = (i, j) row-major), bias (B, C_out).

    ``per_layer``'s rule (tap (i, j) = the batched matmul a[:, i:i+H', j:j+W']^T g over positions), run as a
    ``lax.scan`` over the nine taps so that ONE shifted input slice is live at a time: per_layer's unrolled
    form let XLA materialise all nine first (conv2, B=256, float32: 148 MiB of temporaries vs 20 MiB here,
    time 355 vs 317 ms min of 5 on the loaded 2-core box; bk's whole step 1.41x -> see ``bk_clipped_sum``).
    Kept tap-major: the norm and the weighted sum reduce over it directly, no (B, k, k, ...) transpose.
    """
    b, h, w, c_out = g.shape
    gm = g.reshape(b, h * w, c_out)
    dims = (((1,), (1,)), ((0,), (0,)))  # contract positions, batch over samples

    def tap(_: None, ij: jax.Array) -> tuple[None, jax.Array]:
        t = jax.lax.dynamic_slice(a, (0, ij[0], ij[1], 0), (b, h, w, a.shape[-1])).reshape(b, h * w, -1)
        return None, jax.lax.dot_general(t, gm, dims, precision=PRECISION)

    offsets = jnp.array([(i, j) for i in range(KERNEL) for j in range(KERNEL)])
    _, taps = jax.lax.scan(tap, None, offsets)
    return taps, gm.sum(axis=1)


def _taps_norm_sq(taps: jax.Array, bias: jax.Array) -> jax.Array:
    return jnp.square(taps).sum(axis=(0, 2, 3)) + jnp.square(bias).sum(axis=1)


def _conv_norm_sq_materialize(a: jax.Array, g: jax.Array) -> jax.Array:
    """(B,) ||dW_b||^2 + ||db_b||^2 from that layer's per-example gradient (``conv_taps``)."""
    return _taps_norm_sq(*conv_taps(a, g))


def _conv_norm_sq_gram(a: jax.Array, g: jax.Array) -> jax.Array:
    """(B,) the same norm as sum_{p,q} <u_p,u_q> <g_p,g_q> (u_p: the k*k*C_in patch at output position p)."""
    b, h, w, c_out = g.shape
    gm = g.reshape(b, h * w, c_out)
    dims = (((2,), (2,)), ((0,), (0,)))  # contract channels, batch over samples -> (B, P, P)
    gram_u = sum(jax.lax.dot_general(t, t, dims, precision=PRECISION) for t in _taps(a, h, w))
    gram_g = jax.lax.dot_general(gm, gm, dims, precision=PRECISION)
    return (gram_u * gram_g).sum(axis=(1, 2)) + jnp.square(gm.sum(axis=1)).sum(axis=1)


CONV_NORM_FNS = {"materialize": _conv_norm_sq_materialize, "gram": _conv_norm_sq_gram}


def layer_norms_sq(inputs: Arrays, cotangents: Arrays) -> Arrays:
    """{layer: (B,) squared per-example norm of that layer's weight + bias gradient}; see the module doc."""
    out = {}
    for layer in LINEAR_LAYERS:
        a, g = inputs[layer], cotangents[layer]
        out[layer] = jnp.square(g).sum(axis=1) * (jnp.square(a).sum(axis=1) + 1.0)
    for layer in CONV_LAYERS:
        out[layer] = CONV_NORM_FNS[CONV_NORM_RULES[layer]](inputs[layer], cotangents[layer])
    return out


def _norms(inputs: Arrays, cotangents: Arrays) -> jax.Array:
    return jnp.sqrt(sum(layer_norms_sq(inputs, cotangents).values()))


def ghost_norms(params: Params, x: jax.Array, y: jax.Array, *, loss: str) -> jax.Array:
    """(B,) each example's global gradient L2 norm, without writing per-example gradients."""
    inputs, cots, _ = _outputs(params, x, y, loss)
    return _norms(inputs, cots)


def _weights(norms: jax.Array, clip: float, mask: jax.Array | None) -> jax.Array:
    c = factors_from_norms(norms, clip)
    return c if mask is None else c * jnp.asarray(mask, c.dtype)


def ghost_clipped_sum(
    params: Params, x: jax.Array, y: jax.Array, *, clip: float, loss: str, mask: jax.Array | None = None
) -> tuple[Params, jax.Array]:
    """(sum_b m_b c_b g_b shaped like params, sum_b m_b loss_b): ghost norms, then a second backward."""
    inputs, cots, losses = _outputs(params, x, y, loss)
    weights = jax.lax.stop_gradient(_weights(_norms(inputs, cots), clip, mask))

    def weighted(p: Params) -> jax.Array:
        return (weights * example_losses(apply(p, x), y, loss)).sum()

    return jax.grad(weighted)(params), _masked_sum(losses, mask)


def _masked_sum(losses: jax.Array, mask: jax.Array | None) -> jax.Array:
    return losses.sum() if mask is None else (losses * jnp.asarray(mask, losses.dtype)).sum()


def _conv_sum(a: jax.Array, g: jax.Array) -> jax.Array:
    """sum_b dW_b as an HWIO kernel: per tap one (C_in, C_out) matmul over samples AND positions.

    Used only for a conv layer whose norm rule is "gram" (no per-example gradient at hand). On XLA:CPU it is
    slower than materialising: conv2, B=64, float32, with cotangents pre-scaled: 160-240 ms whether as these
    nine dots (K = B H'W' = 36864), one im2col matmul, or batched dots summed over samples, against 37-57 ms
    for the per-example taps plus a weighted sum (XLA's dot on such a long contraction runs at ~6-9 GFLOP/s).
    """
    b, h, w, c_out = g.shape
    gm = g.reshape(b * h * w, c_out)
    dims = (((0,), (0,)), ((), ()))
    taps = [jax.lax.dot_general(t.reshape(b * h * w, -1), gm, dims, precision=PRECISION) for t in _taps(a, h, w)]
    return jnp.stack(taps).reshape(KERNEL, KERNEL, a.shape[-1], c_out)


def bk_clipped_sum(
    params: Params, x: jax.Array, y: jax.Array, *, clip: float, loss: str, mask: jax.Array | None = None
) -> tuple[Params, jax.Array]:
    """(sum_b m_b c_b g_b shaped like params, sum_b m_b loss_b) by book-keeping: no second backward.

    A conv layer whose norm rule is "materialize" already holds its per-example gradient (B x 288 / 18432),
    so its clipped sum is the weighted sum ``tensordot(c m, dW)`` of that; see ``_conv_sum`` for why this
    beats contracting samples and positions in one matmul on XLA:CPU.
    """
    inputs, cots, losses = _outputs(params, x, y, loss)
    norms_sq, per_example = {}, {}
    for layer in LINEAR_LAYERS:
        a, g = inputs[layer], cots[layer]
        norms_sq[layer] = jnp.square(g).sum(axis=1) * (jnp.square(a).sum(axis=1) + 1.0)
    for layer in CONV_LAYERS:
        if CONV_NORM_RULES[layer] == "materialize":
            per_example[layer] = conv_taps(inputs[layer], cots[layer])
            norms_sq[layer] = _taps_norm_sq(*per_example[layer])
        else:
            norms_sq[layer] = CONV_NORM_FNS[CONV_NORM_RULES[layer]](inputs[layer], cots[layer])
    weights = _weights(jnp.sqrt(sum(norms_sq.values())), clip, mask)
    pure = {}
    for layer in LINEAR_LAYERS:
        gc = cots[layer] * weights[:, None]
        pure[layer] = {"kernel": jnp.matmul(inputs[layer].T, gc, precision=PRECISION), "bias": gc.sum(axis=0)}
    for layer in CONV_LAYERS:
        if layer in per_example:
            taps, bias = per_example[layer]
            kernel = jnp.einsum("b,tbio->tio", weights, taps, precision=PRECISION)
            pure[layer] = {"kernel": kernel.reshape(KERNEL, KERNEL, *taps.shape[2:]),
                           "bias": jnp.matmul(weights, bias, precision=PRECISION)}
        else:
            gc = cots[layer] * weights[:, None, None, None]
            pure[layer] = {"kernel": _conv_sum(inputs[layer], gc), "bias": gc.sum(axis=(0, 1, 2))}
    out = jax.tree.map(lambda v: v, params)  # a fresh State of the same structure to fill
    nnx.replace_by_pure_dict(out, pure)
    return out, _masked_sum(losses, mask)
