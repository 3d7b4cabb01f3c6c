"""The non-smooth decisions of JAX's forward: ReLU gates and max-pool winners, in canonical NCHW numpy.

A per-sample gradient is the gradient of one smooth piece of a piecewise-smooth function; the piece is
chosen by these decisions. Comparing them between float32 and float64 explains gradients that jump
(see ``compare.agreement.oracle``). Mirrored by ``torch_impl.decisions``; keys and shapes in ``compare.agreement.oracle.DECISION_SHAPES``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from compare.agreement.oracle import check_decisions
from jax_impl.model import GRAPHDEF
from jax_impl.models.common import flatten_chw
from jax_impl.per_sample import native_inputs


def _pool(h: jax.Array) -> jax.Array:
    return nnx.max_pool(h, (2, 2), strides=(2, 2))


def _sample_forward(params: nnx.State, x: jax.Array) -> dict[str, jax.Array]:
    """ONE example (1, 28, 28), run as a batch of one through the model's own layers (as ``vmap`` sees it)."""
    model = nnx.merge(GRAPHDEF, params)
    h = jnp.transpose(x[None], (0, 2, 3, 1))  # NCHW -> NHWC, as in jax_impl.model
    z1 = model.conv1(h)
    z2 = model.conv2(nnx.relu(z1))
    pooled, pool_vjp = jax.vjp(_pool, nnx.relu(z2))
    (routed,) = pool_vjp(jnp.ones_like(pooled))  # where max-pool's backward sends each window's cotangent
    z3 = model.fc1(flatten_chw(pooled))  # (C, H, W) order, as jax_impl.models.seed_cnn
    return {"conv1.pre": z1[0], "conv2.pre": z2[0], "fc1.pre": z3[0], "pool.routed": routed[0]}


_forward = jax.jit(jax.vmap(_sample_forward, in_axes=(None, 0)))


def _window_index(routed: np.ndarray) -> np.ndarray:
    """(B, 24, 24, C) one-hot-per-window cotangent -> (B, C, 12, 12) position 0..3 (= 2*dh + dw)."""
    b, h, w, c = routed.shape
    windows = routed.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 5, 1, 3, 2, 4).reshape(b, c, h // 2, w // 2, 4)
    assert (np.count_nonzero(windows, axis=-1) == 1).all(), "max-pool backward did not route to exactly one input"
    return np.argmax(windows != 0, axis=-1).astype(np.int8)


def _nchw(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(a, (0, 3, 1, 2)))


def forward_decisions(
    weights: dict[str, np.ndarray], x: np.ndarray, *, dtype: str = "float32", device: str | None = None
) -> dict[str, np.ndarray]:
    """Pre-activations and decisions of the forward in ``dtype`` (``jit(vmap)`` per-sample, like method "vmap").

    Returns ``conv1.pre`` (B,32,26,26), ``conv2.pre`` (B,64,24,24), ``fc1.pre`` (B,128) in ``dtype``;
    ``conv1.relu``/``conv2.relu``/``fc1.relu`` bool gates (pre > 0: JAX's ReLU passes no gradient at 0);
    ``pool.winner`` (B,64,12,12) int8 in 0..3, the window position max_pool's backward routes to.
    """
    y = np.zeros(x.shape[0], np.int64)  # labels are irrelevant to the forward; native_inputs validates x
    params, xj, _ = native_inputs(weights, x, y, dtype=dtype, device=device)
    out = {k: np.asarray(v) for k, v in jax.block_until_ready(_forward(params, xj)).items()}
    decisions = {
        "conv1.pre": _nchw(out["conv1.pre"]),
        "conv2.pre": _nchw(out["conv2.pre"]),
        "fc1.pre": out["fc1.pre"],
        "pool.winner": _window_index(out["pool.routed"]),
    }
    for layer in ("conv1", "conv2", "fc1"):
        decisions[f"{layer}.relu"] = decisions[f"{layer}.pre"] > 0
    return check_decisions(decisions, x.shape[0])
