"""Per-sample gradients from explicit per-layer rules (mirrors ``torch_impl.per_layer``).

One batched forward, one batched backward to the layer OUTPUTS (pre-activations ``z``), then each layer's
per-sample weight gradient from its input ``a`` and output cotangent ``g`` (Goodfellow 2015, "Efficient
per-example gradient computations"):
  linear  dW_b = a_b g_b^T   (a batched outer product; Flax kernels are (in, out)),  db_b = g_b;
  conv    dW_b[i, j] = a_b[i:i+H', j:j+W']^T G_b  (one batched matmul per kernel tap);  db_b = sum_hw g_b.
The cotangents come from ``jax.grad`` w.r.t. zero "probes" added to each layer's output (d/dprobe = d/dz).
The backward differentiates the SUM of per-example losses (= B x the mean loss), so each sample's cotangent
is exactly its own single-example loss gradient (the mean's 1/B undone).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jax_impl.model import GRAPHDEF, PRECISION, loss_fn

Params = nnx.State
KERNEL = 3  # both convolutions: 3x3, stride 1, VALID (jax_impl.model.SimpleCNN)
LAYERS: tuple[str, ...] = ("conv1", "conv2", "fc1", "fc2")


def forward_to_outputs(
    params: Params, x: jax.Array, probes: dict[str, jax.Array]
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """SimpleCNN's forward with ``probes[layer]`` added to each layer's output; also returns each layer's input.

    x: (B, 1, 28, 28) NCHW -> (logits (B, 10), inputs {layer: a}); conv inputs are NHWC, as the model runs them.
    """
    m = nnx.merge(GRAPHDEF, params)
    xh = jnp.transpose(x, (0, 2, 3, 1))  # NCHW -> NHWC
    a1 = nnx.relu(m.conv1(xh) + probes["conv1"])
    h = nnx.relu(m.conv2(a1) + probes["conv2"])
    f = nnx.max_pool(h, (2, 2), strides=(2, 2)).reshape(x.shape[0], -1)  # (H, W, C) order, as the model
    a3 = nnx.relu(m.fc1(f) + probes["fc1"])
    logits = m.fc2(a3) + probes["fc2"]
    return logits, {"conv1": xh, "conv2": a1, "fc1": f, "fc2": a3}


def output_shapes(batch_size: int) -> dict[str, tuple[int, ...]]:
    """Shapes of each layer's output (NHWC for convs)."""
    return {"conv1": (batch_size, 26, 26, 32), "conv2": (batch_size, 24, 24, 64), "fc1": (batch_size, 128),
            "fc2": (batch_size, 10)}


def output_cotangents(
    params: Params, x: jax.Array, y: jax.Array, loss: str
) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
    """(layer inputs, d(sum of per-example losses)/d(layer outputs)), both keyed by layer name."""
    probes = {k: jnp.zeros(s, x.dtype) for k, s in output_shapes(x.shape[0]).items()}

    def total(p: dict[str, jax.Array]) -> tuple[jax.Array, dict[str, jax.Array]]:
        logits, inputs = forward_to_outputs(params, x, p)
        return loss_fn(logits, y, loss) * x.shape[0], inputs  # mean -> sum: per-example cotangents

    cots, inputs = jax.grad(total, has_aux=True)(probes)
    return inputs, cots


def _conv_rule(a: jax.Array, g: jax.Array) -> tuple[jax.Array, jax.Array]:
    """a: (B, H, W, C_in), g: (B, H', W', C_out) -> kernel (B, k, k, C_in, C_out) HWIO, bias (B, C_out).

    Kernel tap (i, j) is the batched matmul  a[:, i:i+H', j:j+W', :]^T g  over the H'W' positions: k*k
    dots on shifted slices, no im2col buffer. ``lax.conv_general_dilated_patches`` + einsum was 2-3x slower
    for conv2 on XLA:CPU (its patches are a grouped convolution, jax#13800): 128 vs 43-56 ms at B=64,
    380 vs 190-215 ms at B=256 (float32, medians of 7, default malloc); whole per_layer_grads 228 -> 198 ms
    (B=64) and 910 -> 760 ms (B=256). Stacking the 9 slices into one (B, H'W', 9 C_in) im2col matrix and
    one dot was in between (72-101 / 280-300 ms); a conv with the samples as feature groups was slowest.
    """
    b, h, w, c_out = g.shape
    gm = g.reshape(b, h * w, c_out)
    dims = (((1,), (1,)), ((0,), (0,)))  # contract positions, batch over samples
    taps = [
        jax.lax.dot_general(a[:, i:i + h, j:j + w, :].reshape(b, h * w, -1), gm, dims, precision=PRECISION)
        for i in range(KERNEL) for j in range(KERNEL)
    ]  # each (B, C_in, C_out)
    kernel = jnp.stack(taps, axis=1).reshape(b, KERNEL, KERNEL, a.shape[-1], c_out)
    return kernel, g.sum(axis=(1, 2))


def _linear_rule(a: jax.Array, g: jax.Array) -> tuple[jax.Array, jax.Array]:
    """a: (B, in), g: (B, out) -> kernel (B, in, out) = outer products, bias (B, out) = g.

    XLA:CPU emits this as one broadcast-multiply loop fusion at ~4 GB/s, 3.5x slower than filling the same
    buffer (fc1, B=64, non-releasing malloc: 70 vs 20 ms). No rewrite helped (all within noise or slower):
    broadcast multiply in either operand order, ``dot_general`` with a size-1 contraction, the (B, out, in)
    product, a zero-padded K=2 or K=8 batched matmul, ``vmap(jnp.outer)``, ``lax.map`` / ``fori_loop`` over
    samples, or the XLA flags ``xla_cpu_prefer_vector_width`` and ``xla_cpu_enable_fast_math``.
    """
    return jnp.einsum("bi,bo->bio", a, g, precision=PRECISION), g


RULES = {"conv1": _conv_rule, "conv2": _conv_rule, "fc1": _linear_rule, "fc2": _linear_rule}


def _batch_grads(params: Params, x: jax.Array, y: jax.Array, loss: str) -> Params:
    inputs, cots = output_cotangents(params, x, y, loss)
    pure = {}
    for layer, rule in RULES.items():
        kernel, bias = rule(inputs[layer], cots[layer])
        pure[layer] = {"kernel": kernel, "bias": bias}
    grads = jax.tree.map(lambda v: v, params)  # a fresh State of the same structure to fill
    nnx.replace_by_pure_dict(grads, pure)
    return grads


def per_layer_grads(
    params: Params, x: jax.Array, y: jax.Array, *, loss: str, chunk_size: int | None = None
) -> Params:
    """Per-sample gradients: an ``nnx.State`` like ``params`` with a leading (B,) axis on every leaf.

    With ``chunk_size``, ``lax.map(batch_size=chunk_size)`` runs the rules on chunks of that many samples
    (it vmaps the one-example rules, which batches their convolutions and products back into one chunk pass).
    """
    if chunk_size is None:
        return _batch_grads(params, x, y, loss)

    def one(xy: tuple[jax.Array, jax.Array]) -> Params:
        return jax.tree.map(lambda v: v[0], _batch_grads(params, xy[0][None], xy[1][None], loss))

    return jax.lax.map(one, (x, y), batch_size=chunk_size)
