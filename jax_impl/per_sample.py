"""Per-sample gradients in JAX, by method name.

Methods (``METHODS``):
  loop        a jitted single-example ``grad``, called from Python once per example (mirrors torch's loop);
  vmap        ``jit(vmap(grad(loss)))``, the idiomatic JAX method;
  vmap_nojit  ``vmap(grad(loss))`` run op by op, to show what ``jit`` buys;
  per_layer   explicit per-layer rules from one batched forward/backward (``jax_impl.per_layer``), jitted;
  vmap_patches  ``jit(vmap(grad))`` of the model with convolutions as patches + dot (``jax_impl.model_patches``);
              only where the workload has convolutions (``applicable_methods``).
Every function takes ``model=`` (a ``contract.spec.MODELS`` name, default "seed_cnn", or a ``model.Net``).
``native_fn`` returns the framework-native callable ``(params, x, y) -> State with (B, *shape) leaves`` that
the benchmarks time; ``per_sample_grads`` is the canonical numpy-in/numpy-out API shared with ``torch_impl``.
"""
from __future__ import annotations

from functools import lru_cache, partial
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from contract.spec import (
    DEFAULT_LOSS,
    DEFAULT_MODEL,
    InputError,
    check_batch,
    check_chunk_size,
    check_dtype,
    check_loss,
    check_method,
    check_output_fits,
)
from jax_impl import model_patches
from jax_impl.model import Net, apply, loss_fn, resolve
from jax_impl.per_layer import per_layer_grads
from jax_impl.weights import JAX_DTYPES, resolve_device, to_canonical, to_native

METHODS: tuple[str, ...] = ("loop", "vmap", "vmap_nojit", "per_layer", "vmap_patches")
# Mirrors torch_impl.per_sample: no JAX method needs CUDA (XLA fuses and launches whole programs), none is missing.
CUDA_METHODS: tuple[str, ...] = ()
MISSING: dict[str, str] = {}

Params = nnx.State
GradFn = Callable[[Params, jax.Array, jax.Array], Params]


def applicable_methods(model: str | Net = DEFAULT_MODEL) -> dict[str, str | None]:
    """{method: None if it applies to this workload, else the reason it does not}, over METHODS."""
    spec = resolve(model).spec
    out: dict[str, str | None] = {m: None for m in METHODS}
    if not spec.has_conv:
        out["vmap_patches"] = "not applicable: no convolution"
    return out


def not_run_by_default(model: str | Net = DEFAULT_MODEL) -> dict[str, str]:
    """{method: why} of the methods that apply but that default method lists leave out for their cost: none here
    (every method compiles once per shape, and the LSTM's recurrence stays one ``lax.scan``, not unrolled)."""
    resolve(model)  # an unknown model name fails here
    return {}


def _check_applicable(method: str, model: str | Net) -> None:
    reason = applicable_methods(model).get(method)
    if reason is not None:
        raise InputError(f"jax method {method!r} on model {resolve(model).spec.name!r}: {reason}")


def batch_loss(params: Params, x: jax.Array, y: jax.Array, loss: str, model: str | Net = DEFAULT_MODEL) -> jax.Array:
    return loss_fn(apply(params, x, model), y, loss)


def sample_loss(params: Params, x: jax.Array, y: jax.Array, loss: str, model: str | Net = DEFAULT_MODEL) -> jax.Array:
    """Loss of ONE example (x: one example's input, y: ()) as a batch of one, exactly as the seed does."""
    return batch_loss(params, x[None], y[None], loss, model)


def _loop(params: Params, x: jax.Array, y: jax.Array, step: GradFn) -> Params:
    grads = [step(params, x[i], y[i]) for i in range(x.shape[0])]
    return jax.tree.map(lambda *g: jnp.stack(g), *grads)


def _vmap(loss: str, chunk_size: int | None, forward: Callable[[Params, jax.Array], jax.Array]) -> GradFn:
    """vmap of one example's gradient; ``forward`` is the model's apply (standard or patches convolutions)."""
    sample_grad = jax.grad(lambda p, x, y: loss_fn(forward(p, x[None]), y[None], loss))
    if chunk_size is None:
        return jax.vmap(sample_grad, in_axes=(None, 0, 0))
    # lax.map with batch_size vmaps over chunks of `chunk_size` and loops over chunks (jax#11319).
    return lambda params, x, y: jax.lax.map(lambda xy: sample_grad(params, *xy), (x, y), batch_size=chunk_size)


@lru_cache(maxsize=None)  # one jit/compile per (method, loss, chunk, model): no recompiling per call
def native_fn(
    method: str = "vmap", *, loss: str = DEFAULT_LOSS, chunk_size: int | None = None,
    model: str | Net = DEFAULT_MODEL,
) -> GradFn:
    """The framework-native per-sample gradient function: ``(params, x, y) -> State of (B, *shape)``."""
    check_loss(loss)
    check_chunk_size(chunk_size)
    check_method(method, METHODS, chunk_size)
    _check_applicable(method, model)
    forward = partial(apply, model=model)
    if method == "loop":
        return partial(_loop, step=jax.jit(jax.grad(partial(sample_loss, loss=loss, model=model))))
    if method == "vmap":
        return jax.jit(_vmap(loss, chunk_size, forward))
    if method == "per_layer":
        return jax.jit(partial(per_layer_grads, loss=loss, chunk_size=chunk_size, model=model))
    if method == "vmap_patches":
        return jax.jit(_vmap(loss, chunk_size, partial(model_patches.apply, model=model)))
    return _vmap(loss, chunk_size, forward)


def reference_fn(*, loss: str = DEFAULT_LOSS, model: str | Net = DEFAULT_MODEL) -> GradFn:
    """Ordinary training's gradient: one batched forward+backward of the mean loss (no per-sample axis)."""
    resolve(model)
    return jax.jit(jax.grad(partial(batch_loss, loss=check_loss(loss), model=model)))


def native_x(x: np.ndarray, dtype: str, dev: jax.Device) -> jax.Array:
    """A checked numpy input batch -> a device array: floats in ``dtype``, token ids as int32."""
    if np.issubdtype(x.dtype, np.integer):
        return jax.device_put(x.astype(np.int32), dev)
    return jax.device_put(x.astype(JAX_DTYPES[dtype]), dev)


def native_inputs(
    weights: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, *, dtype: str = "float32", device: str | None = None,
    model: str | Net = DEFAULT_MODEL,
) -> tuple[Params, jax.Array, jax.Array]:
    """Validate, then move canonical weights and a numpy batch onto ``device`` in ``dtype``."""
    check_dtype(dtype)
    check_batch(x, y, resolve(model).spec)
    dev = resolve_device(device)
    params = to_native(weights, dtype, device, model=model)
    xj = native_x(x, dtype, dev)
    yj = jax.device_put(y.astype(np.int32), dev)
    return params, xj, yj


def per_sample_grads(
    weights: dict[str, np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    *,
    method: str = "vmap",
    loss: str = DEFAULT_LOSS,
    dtype: str = "float32",
    chunk_size: int | None = None,
    device: str | None = None,
    model: str | Net = DEFAULT_MODEL,
) -> dict[str, np.ndarray]:
    """Per-sample gradients in canonical names/layouts with a leading batch axis: ``{name: (B, *shape)}``."""
    fn = native_fn(method, loss=loss, chunk_size=chunk_size, model=model)
    params, xj, yj = native_inputs(weights, x, y, dtype=dtype, device=device, model=model)
    check_output_fits(x.shape[0], dtype, resolve(model).spec)
    try:
        grads = jax.block_until_ready(fn(params, xj, yj))
    except jax.errors.JaxRuntimeError as err:
        if "RESOURCE_EXHAUSTED" in str(err):
            raise MemoryError(
                f"jax method {method!r} ran out of device memory at B={x.shape[0]}; pass chunk_size to bound it"
            ) from err
        raise
    return to_canonical(grads, batch_axis=True, model=model)
