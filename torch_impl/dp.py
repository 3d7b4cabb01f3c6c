"""DP-SGD in PyTorch (Abadi et al. 2016, arXiv:1607.00133), mirroring ``jax_impl.dp`` name for name.

The aggregation is optax's ``differentially_private_aggregate`` written in torch, operation for operation:
  n_i = global L2 norm of example i's gradient (all parameters together)
  f_i = min(clip / n_i, 1), NaN -> 1           (optax's ``per_example_global_norm_clip``; n_i = 0 gives
                                                clip / 0 = inf -> f_i = 1, so no division by zero)
  g   = (sum_i f_i g_i + clip * noise_multiplier * z) / B,   z ~ N(0, I) in the parameters' shapes
  p  <- p - lr * g                              (plain SGD, no momentum)
``z`` is passed in by the caller so both frameworks can take the *same* noisy step from one shared numpy draw
(``compare.train``); ``sample_noise`` draws it natively (torch.Generator) where only speed matters.

The step is two halves, so a data-parallel step can all-reduce between them:
  ``clipped_grad_sum``  -> (sum_b m_b f_b g_b, sum_b m_b loss_b): SUMS, by one of ``CLIPPINGS``:
      "materialize"  per-example gradients (any ``per_sample.METHODS`` method), their norms, a tensordot;
      "ghost"        norms from layer inputs/output cotangents, then a second batched backward
                     (``torch_impl.ghost.ghost_clipped_sum``);
      "bk"           book-keeping: the same norms, then each layer's clipped sum directly, no second backward
                     (``torch_impl.ghost.bk_clipped_sum``; the fastest: docs/results/seed_cnn.md, "Private steps");
  ``noisy_update``      -> p - lr (sum + clip * noise_multiplier * z) / B.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Callable

import numpy as np
import torch
from torch.func import functional_call, grad_and_value, vmap

from contract.privacy import check_dp_params
from contract.spec import DEFAULT_LOSS, DEFAULT_MODEL, check_batch, check_dtype, check_loss, storage_dtype
from torch_impl import ghost, precision
from torch_impl.model import Net, resolve
from torch_impl.per_sample import batch_loss, native_fn, native_x, sample_loss
from torch_impl.weights import resolve_device, to_native

Params = dict[str, torch.Tensor]
DPStepFn = Callable[[Params, torch.Tensor, torch.Tensor, "Params | None"], tuple[Params, torch.Tensor]]
SGDStepFn = Callable[[Params, torch.Tensor, torch.Tensor], tuple[Params, torch.Tensor]]

CLIPPINGS: tuple[str, ...] = ("materialize", "ghost", "bk")


def clip_factors(per_example: Params, clip: float) -> torch.Tensor:
    """(B,) factors ``min(clip / ||g_i||, 1)`` (NaN -> 1), ``||g_i||`` over all parameters of example i."""
    # Norms without ``g.square()``, which would first write a copy of all B x 1.2M values (390 ms at B=256 vs
    # 60 ms). Two levels (each output row, then the rows) because one float32 vector_norm over 1.2M terms
    # drifts by ~1e-5 relative on CPU; two levels stay at ~1e-7 (tests/test_dp.py holds clipping to 1e-5).
    return ghost.factors_from_norms(_materialized_norms(per_example), clip)


def _materialized_norms(per_example: Params) -> torch.Tensor:
    per_example = precision.to_float32(per_example)  # a clipping norm never sums in bfloat16
    rows = [torch.linalg.vector_norm(g.reshape(g.shape[0], g.shape[1], -1), dim=-1) for g in per_example.values()]
    return torch.linalg.vector_norm(torch.cat(rows, dim=1), dim=1)


def private_mean(
    per_example: Params, *, clip: float, noise_multiplier: float, noise: Params | None
) -> Params:
    """Clipped sum plus Gaussian noise of std ``clip * noise_multiplier``, over B: ``{name: shape}``.

    ``noise``: standard normal draws shaped like the parameters; None only when ``noise_multiplier == 0``.
    """
    if noise is None and noise_multiplier != 0:
        raise ValueError(f"noise_multiplier={noise_multiplier} needs a noise draw; got noise=None")
    factors = clip_factors(per_example, clip)
    batch = factors.shape[0]
    std = clip * noise_multiplier
    out = {}
    for name, g in per_example.items():
        clipped_sum = torch.tensordot(factors, g, dims=1)
        out[name] = (clipped_sum if noise is None else clipped_sum + std * noise[name]) / batch
    return out


def _per_example_fn(
    method: str, loss: str, model: str | Net = DEFAULT_MODEL, dtype: str = "float32"
) -> Callable[[Params, torch.Tensor, torch.Tensor], tuple[Params, torch.Tensor]]:
    """``(params, x, y) -> (per-example grads, per-example losses (B,))`` with any ``per_sample.METHODS`` method,
    computed in ``dtype``'s precision, returned in float32 for bfloat16 (``precision.policy``).

    'vmap' gets the losses from the same pass (``grad_and_value``); other methods return gradients only, so
    their losses cost one extra batched forward.
    """
    return precision.policy(_method_with_losses(method, loss, model), dtype)


def _method_with_losses(
    method: str, loss: str, model: str | Net
) -> Callable[[Params, torch.Tensor, torch.Tensor], tuple[Params, torch.Tensor]]:
    if method == "vmap":
        return vmap(grad_and_value(partial(sample_loss, loss=loss, model=model)), in_dims=(None, 0, 0))
    grads_fn = native_fn(method, loss=loss, model=model)
    template = resolve(model).module  # structure only; parameters travel in the dicts given to functional_call

    def with_losses(params: Params, x: torch.Tensor, y: torch.Tensor) -> tuple[Params, torch.Tensor]:
        with torch.no_grad():
            losses = ghost.example_losses(functional_call(template, params, (x,)), y, loss)
        return grads_fn(params, x, y), losses

    return with_losses


def check_clipping(clipping: str) -> str:
    if clipping not in CLIPPINGS:
        raise ValueError(f"unknown clipping {clipping!r}; expected one of {CLIPPINGS}")
    return clipping


def _check_mask(mask: object, x: torch.Tensor, params: Params) -> torch.Tensor | None:
    """None, or the mask as a (B,) tensor in the parameters' dtype (bool and 0/1 floats accepted)."""
    if mask is None:
        return None
    m = torch.as_tensor(mask, device=x.device)
    if m.shape != (x.shape[0],):
        raise ValueError(f"mask must have shape ({x.shape[0]},) like the batch; got {tuple(m.shape)}")
    return m.to(next(iter(params.values())).dtype)


def clipped_grad_sum(
    params: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    clip: float,
    loss: str = DEFAULT_LOSS,
    clipping: str = "materialize",
    per_sample_method: str = "vmap",
    mask: torch.Tensor | None = None,
    model: str | Net = DEFAULT_MODEL,
    dtype: str = "float32",
) -> tuple[Params, torch.Tensor]:
    """(sum_b m_b f_b g_b {name: shape}, sum_b m_b loss_b scalar): SUMS, for a data-parallel all-reduce.

    ``dtype="bfloat16"``: the forward/backward in bfloat16 on the float32 ``params``; norms, factors and sums in
    float32 (docs/precision.md).

    f_b = min(1, clip / ||g_b||) (NaN -> 1; clip = inf -> 1); mask (B,) bool/0-1 float, 0 = padding example
    (contributes nothing; None = all ones). ``per_sample_method`` is used by "materialize" only.
    x: the workload's batch (seed_cnn: (B, 1, 28, 28) NCHW), y: (B,) int64.
    """
    check_clipping(clipping)
    check_loss(loss)
    check_dtype(dtype)
    resolve(model)
    m = _check_mask(mask, x, params)
    if clipping == "ghost":
        return ghost.ghost_clipped_sum(params, x, y, clip=clip, loss=loss, mask=m, model=model, dtype=dtype)
    if clipping == "bk":
        return ghost.bk_clipped_sum(params, x, y, clip=clip, loss=loss, mask=m, model=model, dtype=dtype)
    grads, losses = _per_example_fn(per_sample_method, loss, model, dtype)(params, x, y)
    weights = clip_factors(grads, clip)
    if m is not None:
        weights, losses = weights * m, losses * m
    return {k: torch.tensordot(weights, g, dims=1) for k, g in grads.items()}, losses.sum()


def per_example_norms(
    params: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    loss: str = DEFAULT_LOSS,
    clipping: str = "ghost",
    per_sample_method: str = "vmap",
    model: str | Net = DEFAULT_MODEL,
    dtype: str = "float32",
) -> torch.Tensor:
    """(B,) each example's global gradient L2 norm by ``clipping``'s route ("ghost" and "bk" share theirs)."""
    check_clipping(clipping)
    check_loss(loss)
    check_dtype(dtype)
    if clipping == "materialize":
        return _materialized_norms(_per_example_fn(per_sample_method, loss, model, dtype)(params, x, y)[0])
    return ghost.ghost_norms(params, x, y, loss=loss, model=model, dtype=dtype)


def noisy_update(
    params: Params,
    clipped_sum: Params,
    *,
    lr: float,
    clip: float,
    noise_multiplier: float,
    batch_size: int,
    noise: Params | None,
) -> Params:
    """``p - lr * (clipped_sum + clip * noise_multiplier * noise) / batch_size`` for every parameter.

    ``noise``: standard normal draws shaped like the parameters; None only when ``noise_multiplier == 0``.
    """
    if noise is None and noise_multiplier != 0:
        raise ValueError(f"noise_multiplier={noise_multiplier} needs a noise draw; got noise=None")
    std, scale = clip * noise_multiplier, lr / batch_size
    if noise is None:
        return {k: params[k] - scale * clipped_sum[k] for k in params}
    return {k: params[k] - scale * (clipped_sum[k] + std * noise[k]) for k in params}


def make_step(
    *,
    lr: float,
    clip: float,
    noise_multiplier: float,
    loss: str = DEFAULT_LOSS,
    per_sample_method: str = "vmap",
    clipping: str = "materialize",
    model: str | Net = DEFAULT_MODEL,
    dtype: str = "float32",
) -> DPStepFn:
    """One DP-SGD step ``step(params, x, y, noise) -> (new_params, mean loss before the step)``:
    ``clipped_grad_sum`` then ``noisy_update`` with batch_size = B.

    ``clipping``: one of ``CLIPPINGS`` (checked here, before any work). Per-sample gradients for
    "materialize" come from ``per_sample_method`` (any of ``per_sample.METHODS``; default the tutorial's
    torch.func 'vmap'; the benchmark also times the fastest, 'per_layer'). ``dtype="bfloat16"``: bfloat16
    compute on float32 master parameters; the update is float32 (docs/precision.md).
    """
    check_dp_params(lr=lr, clip=clip, noise_multiplier=noise_multiplier)
    check_clipping(clipping)
    check_loss(loss)
    check_dtype(dtype)
    resolve(model)

    def step(params: Params, x: torch.Tensor, y: torch.Tensor, noise: Params | None = None) -> tuple[Params, torch.Tensor]:
        if noise is None and noise_multiplier != 0:  # before the gradient work, not after it
            raise ValueError(f"noise_multiplier={noise_multiplier} needs a noise draw; got noise=None")
        sums, loss_sum = clipped_grad_sum(
            params, x, y, clip=clip, loss=loss, clipping=clipping, per_sample_method=per_sample_method, model=model,
            dtype=dtype,
        )
        batch = x.shape[0]
        new = noisy_update(
            params, sums, lr=lr, clip=clip, noise_multiplier=noise_multiplier, batch_size=batch, noise=noise
        )
        return new, loss_sum / batch

    return step


def batch_grad_and_value(params: Params, x: torch.Tensor, y: torch.Tensor, *, loss: str,
                         model: str | Net) -> tuple[Params, torch.Tensor]:
    """(d mean loss / d params, mean loss) by ``torch.autograd.grad``: what ``torch.func.grad_and_value`` returns,
    without its transform's per-op dispatch (an SGD step through ``grad_and_value`` was 1.20-1.57x this one on the
    lstm workload and 2.1-2.4x on ffnn: ``scripts/sgd_formulations.py``, paper/perf-sgd/)."""
    live = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    with torch.enable_grad():
        value = batch_loss(live, x, y, loss, model)
        grads = torch.autograd.grad(value, list(live.values()), allow_unused=True)
    return {k: torch.zeros_like(v) if g is None else g for (k, v), g in zip(live.items(), grads)}, value.detach()


def make_sgd_step(
    *, lr: float, loss: str = DEFAULT_LOSS, model: str | Net = DEFAULT_MODEL, dtype: str = "float32"
) -> SGDStepFn:
    """The non-private baseline: ``step(params, x, y) -> (new_params, loss)`` from the batched mean gradient
    (``dtype="bfloat16"``: bfloat16 compute, float32 update)."""
    check_dp_params(lr=lr, clip=math.inf, noise_multiplier=0.0)
    check_dtype(dtype)
    resolve(model)
    value_and_grad = precision.policy(partial(batch_grad_and_value, loss=check_loss(loss), model=model), dtype)

    def step(params: Params, x: torch.Tensor, y: torch.Tensor) -> tuple[Params, torch.Tensor]:
        grads, value = value_and_grad(params, x, y)
        return {k: params[k] - lr * grads[k] for k in params}, value

    return step


def sample_noise(generator: torch.Generator, params: Params) -> Params:
    """Standard normal draws shaped like ``params`` from a native generator (for timing, not agreement)."""
    return {
        k: torch.randn(p.shape, generator=generator, dtype=p.dtype, device=p.device) for k, p in params.items()
    }


def native_noise(
    noise: dict[str, np.ndarray], *, dtype: str = "float32", device: str | None = None,
    model: str | Net = DEFAULT_MODEL,
) -> Params:
    """A shared canonical draw ``{name: float32 array}`` -> native tensors (same values on both sides)."""
    return to_native(noise, storage_dtype(dtype), device, model=model)


def native_batch(
    x: np.ndarray, y: np.ndarray, *, dtype: str = "float32", device: str | None = None,
    model: str | Net | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A numpy batch -> device tensors (floats in ``dtype``, token ids int64); with ``model``, checked first
    (see ``contract.spec.check_batch``)."""
    if model is not None:
        check_batch(x, y, resolve(model).spec)
    dev = resolve_device(device)
    return native_x(x, storage_dtype(dtype), dev), torch.as_tensor(y, dtype=torch.int64, device=dev)


def predict(params: Params, x: torch.Tensor, model: str | Net = DEFAULT_MODEL) -> np.ndarray:
    """Predicted class per example, (B,) int64 numpy."""
    with torch.no_grad():
        return functional_call(resolve(model).module, params, (x,)).argmax(1).cpu().numpy()


def block_until_ready(tree: object) -> object:
    """Wait for queued device work before a clock stops (CPU torch is synchronous)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return tree
