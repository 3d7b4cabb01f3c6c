"""DP-SGD in PyTorch (Abadi et al. 2016, arXiv:1607.00133), mirroring ``jax_impl.dp`` name for name.

The aggregation is optax's ``differentially_private_aggregate`` written in torch, operation for operation:
  n_i = global L2 norm of example i's gradient (all parameters together)
  f_i = min(clip / n_i, 1), NaN -> 1           (optax's ``per_example_global_norm_clip``; n_i = 0 gives
                                                clip / 0 = inf -> f_i = 1, so no division by zero)
  g   = (sum_i f_i g_i + clip * noise_multiplier * z) / B,   z ~ N(0, I) in the parameters' shapes
  p  <- p - lr * g                              (plain SGD, no momentum)
``z`` is passed in by the caller so both frameworks can take the *same* noisy step from one shared numpy draw
(``compare.train``); ``sample_noise`` draws it natively (torch.Generator) where only speed matters.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Callable

import numpy as np
import torch
from torch.func import functional_call, grad_and_value, vmap

from compare.training.privacy import check_dp_params
from compare.spec import DEFAULT_LOSS, check_dtype, check_loss
from torch_impl.model import SimpleCNN
from torch_impl.per_sample import batch_loss, native_fn, sample_loss
from torch_impl.weights import TORCH_DTYPES, resolve_device, to_native

Params = dict[str, torch.Tensor]
DPStepFn = Callable[[Params, torch.Tensor, torch.Tensor, "Params | None"], tuple[Params, torch.Tensor]]
SGDStepFn = Callable[[Params, torch.Tensor, torch.Tensor], tuple[Params, torch.Tensor]]

_TEMPLATE = SimpleCNN().to("meta")  # structure only; parameters travel in the dicts given to functional_call


def clip_factors(per_example: Params, clip: float) -> torch.Tensor:
    """(B,) factors ``min(clip / ||g_i||, 1)`` (NaN -> 1), ``||g_i||`` over all parameters of example i."""
    # Norms without ``g.square()``, which would first write a copy of all B x 1.2M values (390 ms at B=256 vs
    # 60 ms). Two levels (each output row, then the rows) because one float32 vector_norm over 1.2M terms
    # drifts by ~1e-5 relative on CPU; two levels stay at ~1e-7 (tests/test_dp.py holds clipping to 1e-5).
    rows = [torch.linalg.vector_norm(g.reshape(g.shape[0], g.shape[1], -1), dim=-1) for g in per_example.values()]
    norms = torch.linalg.vector_norm(torch.cat(rows, dim=1), dim=1)
    return torch.nan_to_num(torch.clamp(clip / norms, max=1.0), nan=1.0)


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


def _per_example_fn(method: str, loss: str) -> Callable[[Params, torch.Tensor, torch.Tensor], tuple[Params, torch.Tensor]]:
    """``(params, x, y) -> (per-example grads, mean loss)`` with any method of ``per_sample.METHODS``.

    'vmap' gets the losses from the same pass (``grad_and_value``); other methods return gradients only, so
    their mean loss costs one extra batched forward.
    """
    if method == "vmap":
        per_example = vmap(grad_and_value(partial(sample_loss, loss=loss)), in_dims=(None, 0, 0))
        return lambda params, x, y: (lambda g, v: (g, v.mean()))(*per_example(params, x, y))
    grads_fn = native_fn(method, loss=loss)

    def with_loss(params: Params, x: torch.Tensor, y: torch.Tensor) -> tuple[Params, torch.Tensor]:
        with torch.no_grad():
            value = batch_loss(params, x, y, loss)
        return grads_fn(params, x, y), value

    return with_loss


def make_step(
    *, lr: float, clip: float, noise_multiplier: float, loss: str = DEFAULT_LOSS, per_sample_method: str = "vmap"
) -> DPStepFn:
    """One DP-SGD step ``step(params, x, y, noise) -> (new_params, mean loss before the step)``.

    Per-sample gradients come from ``per_sample_method`` (any of ``per_sample.METHODS``; default the
    tutorial's torch.func 'vmap'; the benchmark also times the fastest, 'per_layer').
    """
    check_dp_params(lr=lr, clip=clip, noise_multiplier=noise_multiplier)
    per_example = _per_example_fn(per_sample_method, check_loss(loss))

    def step(params: Params, x: torch.Tensor, y: torch.Tensor, noise: Params | None = None) -> tuple[Params, torch.Tensor]:
        grads, mean_loss = per_example(params, x, y)
        update = private_mean(grads, clip=clip, noise_multiplier=noise_multiplier, noise=noise)
        return {k: params[k] - lr * update[k] for k in params}, mean_loss

    return step


def make_sgd_step(*, lr: float, loss: str = DEFAULT_LOSS) -> SGDStepFn:
    """The non-private baseline: ``step(params, x, y) -> (new_params, loss)`` from the batched mean gradient."""
    check_dp_params(lr=lr, clip=math.inf, noise_multiplier=0.0)
    value_and_grad = grad_and_value(partial(batch_loss, loss=check_loss(loss)))

    def step(params: Params, x: torch.Tensor, y: torch.Tensor) -> tuple[Params, torch.Tensor]:
        grads, value = value_and_grad(params, x, y)
        return {k: params[k] - lr * grads[k] for k in params}, value

    return step


def sample_noise(generator: torch.Generator, params: Params) -> Params:
    """Standard normal draws shaped like ``params`` from a native generator (for timing, not agreement)."""
    return {
        k: torch.randn(p.shape, generator=generator, dtype=p.dtype, device=p.device) for k, p in params.items()
    }


def native_noise(noise: dict[str, np.ndarray], *, dtype: str = "float32", device: str | None = None) -> Params:
    """A shared canonical draw ``{name: float32 array}`` -> native tensors (same values on both sides)."""
    return to_native(noise, check_dtype(dtype), device)


def native_batch(
    x: np.ndarray, y: np.ndarray, *, dtype: str = "float32", device: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A checked numpy batch (see ``compare.spec.check_batch``) -> device tensors."""
    dev = resolve_device(device)
    return torch.as_tensor(x, dtype=TORCH_DTYPES[check_dtype(dtype)], device=dev), torch.as_tensor(
        y, dtype=torch.int64, device=dev
    )


def predict(params: Params, x: torch.Tensor) -> np.ndarray:
    """Predicted class per example, (B,) int64 numpy."""
    with torch.no_grad():
        return functional_call(_TEMPLATE, params, (x,)).argmax(1).cpu().numpy()


def block_until_ready(tree: object) -> object:
    """Wait for queued device work before a clock stops (CPU torch is synchronous)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return tree
