"""Opacus 1.6 ``GradSampleModule`` modes as per-sample methods: the peer baselines (torch only, optional extra).

  opacus_hooks      module hooks + per-layer rules (einsum for linear, unfold/im2col for conv);
  opacus_ew         PyTorch's ExpandedWeights (``call_for_per_sample_grads``), Opacus' "ew" mode;
  opacus_functorch  ``force_functorch``: every layer's rule via ``torch.func`` (vmap(grad) of the layer).
Opacus computes ``p.grad_sample`` of the loss it is given; with ``loss_reduction="mean"`` it multiplies the
backprops by the batch size, undoing the mean's 1/B, so ``grad_sample`` equals the single-example gradients
(what ``loop`` returns). Users of Opacus pay for ``loss.backward()`` (which also accumulates ``p.grad``), so
that is what is timed too.
"""
from __future__ import annotations

import copy
import importlib.util
import warnings
from typing import Callable

import torch

from contract.spec import DEFAULT_MODEL, InputError
from torch_impl.model import Net, loss_fn, resolve

OPACUS_METHODS: tuple[str, ...] = ("opacus_hooks", "opacus_ew", "opacus_functorch")
# The layer types PyTorch's ExpandedWeights has per-sample rules for (torch.nn.utils._expanded_weights); a
# parameter used by any other op makes opacus_ew fail, where hooks / functorch fall back to vmap.
EW_TYPES: tuple[type[torch.nn.Module], ...] = (
    torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Embedding, torch.nn.GroupNorm,
    torch.nn.LayerNorm, torch.nn.InstanceNorm1d, torch.nn.InstanceNorm2d, torch.nn.InstanceNorm3d,
)


def not_applicable(method: str, model: str | Net = DEFAULT_MODEL) -> str | None:
    """Why ``method`` cannot run on this workload, or None (every registered workload runs them all).
    Judged on the module Opacus runs (``opacus_layers``: the LSTM as DPLSTM, whose parameters are its RNNLinear
    children's, so ExpandedWeights covers them): a parameter owned by no ``EW_TYPES`` layer rules opacus_ew out."""
    if method != "opacus_ew":
        return None
    module = resolve(model).module
    if importlib.util.find_spec("opacus") is not None:
        module = opacus_layers(copy.deepcopy(module))  # meta device: no parameter memory
    covered = {id(p) for m in module.modules() if isinstance(m, EW_TYPES) for p in m.parameters(recurse=False)}
    others = [f"{name} ({type(m).__name__})" for name, m in module.named_modules()
              if any(id(p) not in covered for p in m.parameters(recurse=False))]
    return f"not applicable: ExpandedWeights has no rule for {', '.join(others)}" if others else None


Params = dict[str, torch.Tensor]
GradFn = Callable[[Params, torch.Tensor, torch.Tensor], Params]


def live_module(model: str | Net) -> torch.nn.Module:
    """A real (CPU, uninitialised) copy of the workload's module; callers set every parameter's ``.data``.
    A layer with an ``opacus_equivalent()`` is replaced by what that returns: the layer an Opacus user must put
    there, with the same parameter names (the LSTM: ``opacus.layers.DPLSTM``, see torch_impl.models.lstm)."""
    return opacus_layers(copy.deepcopy(resolve(model).module).to_empty(device="cpu"))


def opacus_layers(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` with every layer that has an ``opacus_equivalent()`` replaced (in place) by what that returns."""
    for name, layer in list(module.named_modules()):
        if name and hasattr(layer, "opacus_equivalent"):
            parent, _, attr = name.rpartition(".")
            setattr(module.get_submodule(parent), attr, layer.opacus_equivalent())
    return module


def _wrap(method: str, net: str | Net) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(the plain model, its GradSampleModule wrapper) for ``method``; built once per method instance."""
    from opacus.grad_sample import GradSampleModule, GradSampleModuleExpandedWeights

    model = live_module(net)
    if method == "opacus_ew":
        return model, GradSampleModuleExpandedWeights(model, batch_first=True, loss_reduction="mean")
    force = method == "opacus_functorch"
    return model, GradSampleModule(model, batch_first=True, loss_reduction="mean", strict=True, force_functorch=force)


def opacus_fn(
    method: str, *, loss: str, chunk_size: int | None = None, model: str | Net = DEFAULT_MODEL
) -> GradFn:
    """``(params, x, y) -> {name: (B, *shape)}`` through Opacus; with ``chunk_size``, that many samples a pass."""
    if method not in OPACUS_METHODS:
        raise InputError(f"unknown Opacus method {method!r}; expected one of {OPACUS_METHODS}")
    model, gsm = _wrap(method, model)
    named = dict(model.named_parameters())

    def one_pass(x: torch.Tensor, y: torch.Tensor) -> Params:
        gsm.zero_grad(set_to_none=True)  # drops p.grad and p.grad_sample of the previous call
        with torch.enable_grad(), warnings.catch_warnings():
            # Opacus' full backward hooks warn when the input needs no gradient (x never does here): expected.
            warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
            loss_fn(gsm(x), y, loss).backward()
        out = {n: p.grad_sample for n, p in named.items()}
        gsm.zero_grad(set_to_none=True)  # the module keeps no reference: the caller owns the B x |params| result
        return out                       # (kept, each cached Opacus mode held 2.1 GB of the transformer's float64)

    def call(params: Params, x: torch.Tensor, y: torch.Tensor) -> Params:
        for n, p in named.items():
            p.data = params[n]  # no copy: the module computes with the caller's tensors (dtype, device)
        if chunk_size is None or chunk_size >= x.shape[0]:
            return one_pass(x, y)
        out = {n: torch.empty((x.shape[0], *p.shape), dtype=p.dtype, device=p.device) for n, p in params.items()}
        for lo in range(0, x.shape[0], chunk_size):
            for n, g in one_pass(x[lo : lo + chunk_size], y[lo : lo + chunk_size]).items():
                out[n][lo : lo + chunk_size].copy_(g)
        return out

    return call
