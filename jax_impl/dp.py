"""DP-SGD in JAX with optax (Abadi et al. 2016, arXiv:1607.00133), mirroring ``torch_impl.dp`` name for name.

optax's own DP transformation, ``optax.contrib.differentially_private_aggregate``, draws its noise from a
PRNG key it carries. To let both frameworks take the *same* noisy step from one shared numpy draw, the step
here computes the same aggregation explicitly from optax's own clipping primitive:
  g = (optax.per_example_global_norm_clip(per_example, clip) + clip * noise_multiplier * z) / B
which is ``differentially_private_aggregate``'s update operation for operation (tests/test_dp.py checks
equality with the same key via ``sample_noise``, and with noise 0), followed by ``optax.sgd(lr)``.
``optax_dpsgd`` is optax's own chain, kept as the oracle and for users who want the key-driven form.

Clipping strategies (``CLIPPINGS``): the step is ``clipped_grad_sum`` (sum_b c_b g_b) + ``noisy_update``.
"materialize" is the path above (per-sample gradients from any ``per_sample.METHODS`` method); "ghost" and "bk"
(``jax_impl.ghost``) never write the (B x |params|) per-sample tensor. Measured here (float32, 2-core Intel CPU,
min of 2-4 interleaved steps, shared box): bk 0.64x / 0.71x / 0.84x a plain SGD step at B = 64 / 256 / 1024,
ghost 1.18x / 1.22x / 1.27x; bk beats SGD because it never runs XLA:CPU's conv backward-filter.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from contract.privacy import check_dp_params
from contract.spec import DEFAULT_LOSS, DEFAULT_MODEL, check_batch, check_dtype, check_loss, storage_dtype
from jax_impl import ghost, precision
from jax_impl.model import PRECISION, Net, apply, resolve
from jax_impl.per_sample import batch_loss, native_fn, native_x, sample_loss
from jax_impl.weights import resolve_device, to_native

Params = nnx.State
DPStepFn = Callable[[Params, jax.Array, jax.Array, "Params | None"], tuple[Params, jax.Array]]
SGDStepFn = Callable[[Params, jax.Array, jax.Array], tuple[Params, jax.Array]]


def clip_factors(per_example: Params, clip: float) -> jax.Array:
    """(B,) factors ``min(clip / ||g_i||, 1)`` (NaN -> 1): the multipliers of optax's per-example clipping."""
    norms = jax.vmap(optax.tree.norm)(per_example)
    return jnp.nan_to_num(jnp.minimum(clip / norms, 1.0), nan=1.0)


def private_mean(
    per_example: Params, *, clip: float, noise_multiplier: float, noise: Params | None
) -> Params:
    """Clipped sum plus Gaussian noise of std ``clip * noise_multiplier``, over B: leaves shaped like params.

    ``noise``: standard normal draws shaped like the parameters; None only when ``noise_multiplier == 0``.
    """
    if noise is None and noise_multiplier != 0:
        raise ValueError(f"noise_multiplier={noise_multiplier} needs a noise draw; got noise=None")
    leaves, treedef = jax.tree.flatten(per_example)
    batch = leaves[0].shape[0]
    # optax sums the clipped gradients with a tensordot that takes no precision: HIGHEST here, or a GPU runs
    # it in TF32 (tests/test_gpu.py checks every traced dot)
    with jax.default_matmul_precision("highest"):
        clipped, _ = optax.per_example_global_norm_clip(leaves, clip)
    if noise is not None:
        std = clip * noise_multiplier
        clipped = [g + std * z for g, z in zip(clipped, treedef.flatten_up_to(noise))]
    return jax.tree.unflatten(treedef, [g / batch for g in clipped])


def optax_dpsgd(*, lr: float, clip: float, noise_multiplier: float, key: jax.Array) -> optax.GradientTransformation:
    """optax's own DP-SGD: ``differentially_private_aggregate`` (noise from ``key``) chained with ``sgd(lr)``."""
    check_dp_params(lr=lr, clip=clip, noise_multiplier=noise_multiplier)
    return optax.chain(
        optax.contrib.differentially_private_aggregate(l2_norm_clip=clip, noise_multiplier=noise_multiplier, key=key),
        optax.sgd(lr),
    )


def _per_example_fn(
    method: str, loss: str, model: str | Net = DEFAULT_MODEL, dtype: str = "float32"
) -> Callable[[Params, jax.Array, jax.Array], tuple[Params, jax.Array]]:
    """``(params, x, y) -> (per-example grads, mean loss)`` with any method of ``per_sample.METHODS``, computed
    in ``dtype``'s precision, returned in float32 for bfloat16 (``precision.policy``).

    'vmap' gets the losses from the same pass (``value_and_grad``); other methods return gradients only, so
    their mean loss costs one extra batched forward (inside the same jit, where XLA may share it).
    """
    return precision.policy(_method_with_losses(method, loss, model), dtype)


def _check_options(loss: str, clipping: str, dtype: str, model: str | Net, per_sample_method: str) -> None:
    """A DP call's options, every one checked before any work (for "materialize", the per-sample method too)."""
    check_loss(loss)
    check_clipping(clipping)
    check_dtype(dtype)
    resolve(model)
    if clipping == "materialize":
        _per_example_fn(per_sample_method, loss, model)


def _method_with_losses(
    method: str, loss: str, model: str | Net
) -> Callable[[Params, jax.Array, jax.Array], tuple[Params, jax.Array]]:
    if method == "vmap":
        per_example = jax.vmap(jax.value_and_grad(partial(sample_loss, loss=loss, model=model)), in_axes=(None, 0, 0))
        return lambda params, x, y: (lambda v, g: (g, jnp.mean(v)))(*per_example(params, x, y))
    grads_fn = native_fn(method, loss=loss, model=model)
    return lambda params, x, y: (grads_fn(params, x, y), batch_loss(params, x, y, loss, model))


CLIPPINGS: tuple[str, ...] = ("materialize", "ghost", "bk")


def check_clipping(clipping: str) -> str:
    if clipping not in CLIPPINGS:
        raise ValueError(f"unknown clipping {clipping!r}; expected one of {CLIPPINGS}")
    return clipping


def _materialized_sum(
    params: Params, x: jax.Array, y: jax.Array, *, clip: float, loss: str, per_sample_method: str,
    mask: jax.Array | None, model: str | Net, dtype: str = "float32",
) -> tuple[Params, jax.Array]:
    """Per-example gradients -> optax's per-example clip -> sum (mask: weights after clipping); the gradients
    arrive in float32 whatever ``dtype`` computed them, so the clipping is float32 arithmetic."""
    grads, mean_loss = _per_example_fn(per_sample_method, loss, model, dtype)(params, x, y)
    batch = x.shape[0]
    if mask is None:
        leaves, treedef = jax.tree.flatten(grads)
        # optax sums the clipped gradients with a tensordot that takes no precision: HIGHEST here, or a GPU runs
        # it in TF32 (tests/test_gpu.py checks every traced dot)
        with jax.default_matmul_precision("highest"):
            clipped, _ = optax.per_example_global_norm_clip(leaves, clip)
        return jax.tree.unflatten(treedef, clipped), mean_loss * batch
    m = jnp.asarray(mask, x.dtype)
    weights = clip_factors(grads, clip) * m
    summed = jax.tree.map(lambda g: jnp.tensordot(weights, g, axes=1, precision=PRECISION), grads)
    logits = apply(precision.to_compute(params, dtype), precision.to_compute(x, dtype), model)
    return summed, (ghost.example_losses(logits, y, loss) * m).sum()  # one batched forward


@partial(jax.jit, static_argnames=("loss", "clipping", "per_sample_method", "model", "dtype"))
def _clipped_grad_sum(
    params: Params, x: jax.Array, y: jax.Array, clip: float, mask: jax.Array | None, *, loss: str, clipping: str,
    per_sample_method: str, model: str | Net, dtype: str,
) -> tuple[Params, jax.Array]:
    if clipping == "materialize":
        return _materialized_sum(params, x, y, clip=clip, loss=loss, per_sample_method=per_sample_method,
                                 mask=mask, model=model, dtype=dtype)
    if clipping == "ghost":
        return ghost.ghost_clipped_sum(params, x, y, clip=clip, loss=loss, mask=mask, model=model, dtype=dtype)
    return ghost.bk_clipped_sum(params, x, y, clip=clip, loss=loss, mask=mask, model=model, dtype=dtype)


def clipped_grad_sum(
    params: Params, x: jax.Array, y: jax.Array, *, clip: float, loss: str = DEFAULT_LOSS,
    clipping: str = "materialize", per_sample_method: str = "vmap", mask: jax.Array | None = None,
    model: str | Net = DEFAULT_MODEL, dtype: str = "float32",
) -> tuple[Params, jax.Array]:
    """(sum_b m_b c_b g_b shaped like params, sum_b m_b loss_b), c_b = min(1, clip / ||g_b||) (NaN -> 1).

    SUMS, not means: a data-parallel step all-reduces them, then calls ``noisy_update`` once.
    ``mask``: (B,) weights, 0 = padding example (None: all ones). ``per_sample_method`` is used only by
    "materialize"; "ghost" and "bk" are ``jax_impl.ghost``'s. Jitted (clip traced, so a new clip does not
    recompile); inside another jit it is inlined. ``dtype="bfloat16"``: the forward/backward in bfloat16 on the
    float32 ``params``; norms, factors and sums in float32 (docs/precision.md).
    """
    _check_options(loss, clipping, dtype, model, per_sample_method)
    return _clipped_grad_sum(params, x, y, clip, mask, loss=loss, clipping=clipping,
                             per_sample_method=per_sample_method, model=model, dtype=dtype)


@partial(jax.jit, static_argnames=("loss", "clipping", "per_sample_method", "model", "dtype"))
def _per_example_norms(
    params: Params, x: jax.Array, y: jax.Array, *, loss: str, clipping: str, per_sample_method: str,
    model: str | Net, dtype: str,
) -> jax.Array:
    if clipping == "materialize":
        grads, _ = _per_example_fn(per_sample_method, loss, model, dtype)(params, x, y)
        return jax.vmap(optax.tree.norm)(grads)
    return ghost.ghost_norms(params, x, y, loss=loss, model=model, dtype=dtype)


def per_example_norms(
    params: Params, x: jax.Array, y: jax.Array, *, loss: str = DEFAULT_LOSS, clipping: str = "ghost",
    per_sample_method: str = "vmap", model: str | Net = DEFAULT_MODEL, dtype: str = "float32",
) -> jax.Array:
    """(B,) each example's global gradient L2 norm by that strategy's route ("ghost" and "bk" share theirs)."""
    _check_options(loss, clipping, dtype, model, per_sample_method)
    return _per_example_norms(params, x, y, loss=loss, clipping=clipping, per_sample_method=per_sample_method,
                              model=model, dtype=dtype)


def noisy_update(
    params: Params, clipped_sum: Params, *, lr: float, clip: float, noise_multiplier: float, batch_size: int,
    noise: Params | None,
) -> Params:
    """``p - lr * (clipped_sum + clip * noise_multiplier * noise) / batch_size`` (optax.sgd's update).

    ``noise``: standard normal draws shaped like params; None only when ``noise_multiplier == 0``.
    """
    if noise is None and noise_multiplier != 0:
        raise ValueError(f"noise_multiplier={noise_multiplier} needs a noise draw; got noise=None")
    leaves, treedef = jax.tree.flatten(clipped_sum)
    if noise is not None and noise_multiplier != 0:  # skipped at 0: clip = inf would give inf * 0 = NaN
        std = clip * noise_multiplier
        leaves = [g + std * z for g, z in zip(leaves, treedef.flatten_up_to(noise))]
    mean = jax.tree.unflatten(treedef, [g / batch_size for g in leaves])
    sgd = optax.sgd(lr)
    updates, _ = sgd.update(mean, sgd.init(params))
    return optax.apply_updates(params, updates)


def make_step(
    *, lr: float, clip: float, noise_multiplier: float, loss: str = DEFAULT_LOSS, per_sample_method: str = "vmap",
    clipping: str = "materialize", model: str | Net = DEFAULT_MODEL, dtype: str = "float32",
) -> DPStepFn:
    """One jitted DP-SGD step ``step(params, x, y, noise) -> (new_params, mean loss before the step)``.

    = ``clipped_grad_sum`` (strategy ``clipping``, one of ``CLIPPINGS``) + ``noisy_update`` with B = len(x).
    For "materialize", per-sample gradients come from ``per_sample_method`` (any of ``per_sample.METHODS``;
    default the idiomatic ``vmap(grad)``; the benchmark also times the fastest, 'per_layer'). ``dtype="bfloat16"``:
    bfloat16 compute on float32 master parameters; the update is float32 (docs/precision.md).
    """
    check_dp_params(lr=lr, clip=clip, noise_multiplier=noise_multiplier)
    _check_options(loss, clipping, dtype, model, per_sample_method)

    @jax.jit
    def step(params: Params, x: jax.Array, y: jax.Array, noise: Params | None = None) -> tuple[Params, jax.Array]:
        summed, loss_sum = clipped_grad_sum(params, x, y, clip=clip, loss=loss, clipping=clipping,
                                            per_sample_method=per_sample_method, model=model, dtype=dtype)
        batch = x.shape[0]
        new = noisy_update(params, summed, lr=lr, clip=clip, noise_multiplier=noise_multiplier,
                           batch_size=batch, noise=noise)
        return new, loss_sum / batch

    return step


def make_sgd_step(
    *, lr: float, loss: str = DEFAULT_LOSS, model: str | Net = DEFAULT_MODEL, dtype: str = "float32"
) -> SGDStepFn:
    """The non-private baseline: ``step(params, x, y) -> (new_params, loss)`` from the batched mean gradient
    (``dtype="bfloat16"``: bfloat16 compute, float32 update)."""
    check_dp_params(lr=lr, clip=math.inf, noise_multiplier=0.0)
    check_dtype(dtype)
    resolve(model)
    value_and_grad = precision.policy(jax.value_and_grad(partial(batch_loss, loss=check_loss(loss), model=model)),
                                      dtype)
    sgd = optax.sgd(lr)

    @jax.jit
    def step(params: Params, x: jax.Array, y: jax.Array) -> tuple[Params, jax.Array]:
        value, grads = value_and_grad(params, x, y)
        updates, _ = sgd.update(grads, sgd.init(params))
        return optax.apply_updates(params, updates), value

    return step


def sample_noise(key: jax.Array, params: Params) -> Params:
    """Standard normal draws shaped like ``params``, split from ``key`` exactly as optax's DP aggregate does."""
    leaves, treedef = jax.tree.flatten(params)
    _, *keys = jax.random.split(key, len(leaves) + 1)
    return jax.tree.unflatten(treedef, [jax.random.normal(k, p.shape, p.dtype) for k, p in zip(keys, leaves)])


def native_noise(
    noise: dict[str, np.ndarray], *, dtype: str = "float32", device: str | None = None,
    model: str | Net = DEFAULT_MODEL,
) -> Params:
    """A shared canonical draw ``{name: float32 array}`` -> native State (layouts permuted like weights)."""
    return to_native(noise, storage_dtype(dtype), device, model=model)


def native_batch(
    x: np.ndarray, y: np.ndarray, *, dtype: str = "float32", device: str | None = None,
    model: str | Net | None = None,
) -> tuple[jax.Array, jax.Array]:
    """A numpy batch -> device arrays (floats in ``dtype``, token ids int32); with ``model``, checked first
    (see ``contract.spec.check_batch``)."""
    if model is not None:
        check_batch(x, y, resolve(model).spec)
    dev = resolve_device(device)
    return native_x(x, storage_dtype(dtype), dev), jax.device_put(y.astype(np.int32), dev)


@partial(jax.jit, static_argnames=("model",))
def _labels(params: Params, x: jax.Array, model: str | Net) -> jax.Array:
    return jnp.argmax(apply(params, x, model), axis=1)


def predict(params: Params, x: jax.Array, model: str | Net = DEFAULT_MODEL) -> np.ndarray:
    """Predicted class per example, (B,) int64 numpy."""
    return np.asarray(_labels(params, x, model)).astype(np.int64)


def block_until_ready(tree: object) -> object:
    """Wait for JAX's asynchronous dispatch before a clock stops."""
    return jax.block_until_ready(tree)
