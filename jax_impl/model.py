"""The seed tutorial's CNN in Flax NNX, returning logits; the loss is chosen by name (see ``compare.spec.LOSSES``).

Input is NCHW like PyTorch; the convolutions run NHWC (XLA's native layout), so the flatten before fc1 is
in (H, W, C) order. That difference is absorbed once, in ``jax_impl.weights`` (fc1's permutation).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from compare.spec import check_loss

# Full float32 on every backend (no TF32 on GPUs), matching torch_impl which disables TF32.
PRECISION = jax.lax.Precision.HIGHEST


class SimpleCNN(nnx.Module):
    """conv 1->32 k3, relu, conv 32->64 k3, relu, max-pool 2, flatten (H,W,C), fc 9216->128, relu, fc 128->10."""

    def __init__(self, *, rngs: nnx.Rngs) -> None:
        self.conv1 = nnx.Conv(1, 32, (3, 3), padding="VALID", precision=PRECISION, rngs=rngs)
        self.conv2 = nnx.Conv(32, 64, (3, 3), padding="VALID", precision=PRECISION, rngs=rngs)
        self.fc1 = nnx.Linear(9216, 128, precision=PRECISION, rngs=rngs)
        self.fc2 = nnx.Linear(128, 10, precision=PRECISION, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (B, 1, 28, 28) NCHW -> logits (B, 10)."""
        x = jnp.transpose(x, (0, 2, 3, 1))  # NCHW -> NHWC
        x = nnx.relu(self.conv1(x))
        x = nnx.relu(self.conv2(x))
        x = nnx.max_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape(x.shape[0], -1)  # (H, W, C) order; see jax_impl.weights for fc1
        x = nnx.relu(self.fc1(x))
        return self.fc2(x)


def log_probs(logits: jax.Array) -> jax.Array:
    return jax.nn.log_softmax(logits, axis=1)


def loss_fn(logits: jax.Array, y: jax.Array, loss: str) -> jax.Array:
    """Mean over the batch. ``"seed"`` is the seed's ``nll_loss`` on raw logits, i.e. ``-mean(logits[y])``."""
    check_loss(loss)
    scores = logits if loss == "seed" else log_probs(logits)
    return -jnp.mean(jnp.take_along_axis(scores, y[:, None], axis=1))


# The module's structure without allocating parameters; parameters travel as an nnx.State.
GRAPHDEF, ABSTRACT_STATE = nnx.split(nnx.eval_shape(lambda: SimpleCNN(rngs=nnx.Rngs(0))), nnx.Param)


def apply(params: nnx.State, x: jax.Array) -> jax.Array:
    """Pure forward: ``params`` (as made by ``jax_impl.weights.to_native``) and x -> logits."""
    return nnx.merge(GRAPHDEF, params)(x)
