"""The peers: Opacus 1.6's two DP-SGD paths as steps with ``dp.make_step``'s contract
``step(params, x, y, noise) -> (new_params, mean loss before the step)``.

``make_opacus_hooks_step`` -- the standard path (what ``PrivacyEngine.make_private(grad_sample_mode="hooks")``
builds): ``GradSampleModule`` (hooks mode: forward hooks keep layer inputs, backward hooks write each layer's
per-example gradients into ``p.grad_sample``, materialised for every layer; ``loss_reduction="mean"`` undoes
the mean's 1/B) and ``DPOptimizer`` (per-example norms over all ``p.grad_sample``, clip factors, their weighted
sum, noise, division by ``expected_batch_size``) around ``torch.optim.SGD``. ONE backward pass, which also
accumulates the ordinary ``p.grad`` (Opacus' hooks ride on it; the optimizer overwrites it). Its update equals
``dp.make_step(clipping="materialize")``'s.

``make_opacus_ghost_step`` -- fast gradient clipping ("ghost clipping"): ``GradSampleModuleFastGradientClipping(
use_ghost_clipping=True)`` wraps the model (forward hooks keep layer inputs, backward hooks turn output gradients
into per-example NORMS: ghost norms for Linear, a per-layer materialised gradient for Conv2d),
``DPLossFastGradientClipping`` makes ``loss.backward()`` run TWO backward passes (the mean loss for the norms,
then sum_b c_b loss_b), and ``DPOptimizerFastGradientClipping`` adds noise and divides by the batch size before
the wrapped ``torch.optim.SGD`` steps. Its update equals ``dp.make_step(clipping="ghost")``'s (= "materialize").

loss_reduction "mean" for both, as the model's losses are means. Differences from ``dp.make_step`` (both
peers; tests/test_clipping.py and tests/workload_checks.py check them at the tolerances stated there):
  * Opacus clips with c_b = min(1, clip / (||g_b|| + 1e-6)) (``DPOptimizer.clip_and_accumulate``,
    ``GradSampleModuleFastGradientClipping.get_clipping_coef``), ours min(1, clip / ||g_b||): a clipped
    example's factor is smaller by the relative amount 1e-6 / (||g_b|| + 1e-6), so updates differ by at most
    ~1e-6 / min ||g_b|| relative; unclipped examples (and clip = inf) are identical.
  * Noise: the optimizer's own draw is switched off (noise_multiplier=0 there; Opacus then adds zeros) and the
    caller's draw z is added after its step as  p -= lr * clip * noise_multiplier * z / B,  so the update
    equals make_step's for the same z.
Each module is built once in its factory; each call copies the given parameters into it (1.2M values on the
seed CNN, ~1 ms: part of the step, as a functional API needs) and returns copies of the updated ones.
"""
from __future__ import annotations

import importlib.util
import warnings
from typing import Callable

import torch
import torch.nn as nn

from contract.spec import DEFAULT_LOSS, DEFAULT_MODEL, check_loss
from contract.privacy import check_dp_params
from torch_impl.model import Net, loss_fn
from torch_impl.opacus_methods import live_module

OPACUS_AVAILABLE = importlib.util.find_spec("opacus") is not None

Params = dict[str, torch.Tensor]
DPStepFn = Callable[[Params, torch.Tensor, torch.Tensor, "Params | None"], tuple[Params, torch.Tensor]]


def _criterion(loss: str) -> nn.Module:
    """Per-example-capable criterion (DPLoss sets reduction="none"): CrossEntropy = NLL of log_softmax;
    "seed" = NLL on raw logits."""
    return nn.CrossEntropyLoss(reduction="mean") if loss == "nll_log_softmax" else nn.NLLLoss(reduction="mean")


def _require_opacus(lr: float, clip: float, noise_multiplier: float, loss: str) -> None:
    check_dp_params(lr=lr, clip=clip, noise_multiplier=noise_multiplier)
    check_loss(loss)
    if not OPACUS_AVAILABLE:
        raise ModuleNotFoundError("opacus is not installed: pip install -e '.[opacus]'")


def _load(live: dict[str, nn.Parameter], params: Params) -> None:
    """Copy the caller's parameters into the module's (re-typed / moved first where dtype or device differ)."""
    with torch.no_grad():
        for name, p in live.items():
            if p.dtype != params[name].dtype or p.device != params[name].device:
                p.data = torch.empty_like(params[name])
            p.copy_(params[name])


def _noised_copy(live: dict[str, nn.Parameter], noise: Params | None, scale: float) -> Params:
    """After the optimizer's step: p -= scale * z (scale = lr * clip * noise_multiplier / B); copies out."""
    with torch.no_grad():
        if noise is not None:
            for name, p in live.items():
                p.sub_(noise[name], alpha=scale)
        return {name: p.detach().clone() for name, p in live.items()}


def _check_noise(noise: Params | None, noise_multiplier: float) -> None:
    if noise is None and noise_multiplier != 0:
        raise ValueError(f"noise_multiplier={noise_multiplier} needs a noise draw; got noise=None")


def _backward(loss: torch.Tensor) -> None:
    with warnings.catch_warnings():  # expected: x needs no gradient, so the first layer's hook sees only its output's
        warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
        loss.backward()


def _make_step(live: dict[str, nn.Parameter], optimizer: object, batch_loss: Callable[[torch.Tensor, torch.Tensor],
               torch.Tensor], *, lr: float, std: float, noise_multiplier: float) -> DPStepFn:
    """The step both peers share: copy the parameters in, one Opacus backward of ``batch_loss(x, y)`` and the
    optimizer's step (clipping inside Opacus), then our noise draw; returns copies of the updated parameters."""

    def step(params: Params, x: torch.Tensor, y: torch.Tensor, noise: Params | None = None) -> tuple[Params, torch.Tensor]:
        _check_noise(noise, noise_multiplier)
        _load(live, params)
        optimizer.expected_batch_size = x.shape[0]
        optimizer.zero_grad(set_to_none=True)  # drops p.grad, p.grad_sample and p.summed_grad
        value = batch_loss(x, y)
        _backward(value)
        optimizer.step()
        return _noised_copy(live, noise, lr * std / x.shape[0]), value.detach()

    return step


def make_opacus_hooks_step(
    *, lr: float, clip: float, noise_multiplier: float, loss: str = DEFAULT_LOSS, model: str | Net = DEFAULT_MODEL
) -> DPStepFn:
    """``step(params, x, y, noise=None) -> (new_params, mean loss before the step)`` by Opacus' standard path:
    ``GradSampleModule`` (hooks, per-example gradients materialised in ``p.grad_sample``) + ``DPOptimizer``.

    params: {state_dict name: tensor}; x: the workload's batch; y: (B,) int64; noise: standard normal draws
    shaped like params (None only when noise_multiplier == 0). Raises ModuleNotFoundError without opacus.
    clip = inf is passed to ``DPOptimizer`` as the largest float: its noise std is noise_multiplier *
    max_grad_norm, and 0 * inf = NaN would reach ``torch.normal``; every factor is still exactly 1.
    """
    _require_opacus(lr, clip, noise_multiplier, loss)
    import sys

    from opacus.grad_sample import GradSampleModule
    from opacus.optimizers import DPOptimizer

    model = live_module(model)  # parameters are copied in on each call
    gsm = GradSampleModule(model, batch_first=True, loss_reduction="mean", strict=True, force_functorch=False)
    gsm.train()
    optimizer = DPOptimizer(
        torch.optim.SGD(model.parameters(), lr=lr),
        noise_multiplier=0.0,  # our draw is added below, so the update is testable against make_step's
        max_grad_norm=clip if clip != float("inf") else sys.float_info.max,
        expected_batch_size=1,  # set to B on each call
        loss_reduction="mean",
    )
    return _make_step(dict(model.named_parameters()), optimizer, lambda x, y: loss_fn(gsm(x), y, loss), lr=lr,
                      std=clip * noise_multiplier, noise_multiplier=noise_multiplier)


def make_opacus_ghost_step(
    *, lr: float, clip: float, noise_multiplier: float, loss: str = DEFAULT_LOSS, model: str | Net = DEFAULT_MODEL
) -> DPStepFn:
    """``step(params, x, y, noise=None) -> (new_params, mean loss before the step)`` by Opacus ghost clipping.

    params: {state_dict name: tensor}; x: the workload's batch; y: (B,) int64; noise: standard normal draws
    shaped like params (None only when noise_multiplier == 0). Raises ModuleNotFoundError without opacus.
    """
    _require_opacus(lr, clip, noise_multiplier, loss)
    from opacus.grad_sample import GradSampleModuleFastGradientClipping
    from opacus.optimizers import DPOptimizerFastGradientClipping
    from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping

    model = live_module(model)  # parameters are copied in on each call
    gsm = GradSampleModuleFastGradientClipping(
        model, batch_first=True, loss_reduction="mean", max_grad_norm=clip, use_ghost_clipping=True
    )
    gsm.train()
    optimizer = DPOptimizerFastGradientClipping(
        torch.optim.SGD(model.parameters(), lr=lr),
        noise_multiplier=0.0,  # our draw is added below, so the update is testable against make_step's
        max_grad_norm=1.0,  # used only for the noise std (0 here); the module clips. inf would give 0 * inf = NaN
        expected_batch_size=1,  # set to B on each call
        loss_reduction="mean",
    )
    criterion = DPLossFastGradientClipping(gsm, optimizer, _criterion(loss), loss_reduction="mean")
    return _make_step(dict(model.named_parameters()), optimizer, lambda x, y: criterion(gsm(x), y), lr=lr,
                      std=clip * noise_multiplier, noise_multiplier=noise_multiplier)
