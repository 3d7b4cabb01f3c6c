"""Per-layer-KIND rules for per-example gradients, their norms and clipped sums (mirrors ``jax_impl.rules``).

Opacus' shape (``opacus/grad_sample/``): one small file per layer kind, each registering, by decorator, for
its module type(s):
  grad sampler   (layer, a, g) -> {leaf: (B, *leaf shape)}   per-example gradients of the layer's own parameters,
                 or None: this instance has options the rule does not cover (fallback)
  norm sampler   (layer, a, g) -> (B,) squared norms, or None = "materialise me" (the kind's cost model said
                 so, or the instance has options the rule does not cover)
  clipped sum    (layer, a, g, w) -> {leaf: leaf shape} = sum_b w_b grad_b, without per-example gradients
with a = the layer's input, g = d(sum of per-example losses)/d(layer output). The layer is the model's template
module (meta parameters: structure and options only). A kind whose rules need the parameter VALUES registers with ``needs_params=True`` and its samplers get ``params=`` the layer's own
leaves {leaf: tensor} as a keyword: the engine passes them to ``per_example`` / ``norm_sq`` / ``clipped_sum``,
nothing is kept on the module between calls. A layer of no registered kind
(or one called more than once per forward) falls back to materialising: ``fallback_per_example`` is
``vmap`` over examples of the vjp of that layer ALONE (as Opacus' functorch fallback), so an unknown layer
is slower, never wrong. The engine (``per_layer``, ``ghost``) never names a model's layers.
Kinds here, one file each: ``linear`` (nn.Linear, inputs (B, d) or (B, T..., d)), ``conv`` (nn.Conv2d),
``embedding``, ``lstm`` (recorded at its ``GateInput`` child, its input completed by its hidden states:
``site_input``), ``layernorm``, ``groupnorm``, ``param_add`` and ``projection`` (a parent's parameters
applied by a parameter-free child: ``site_module``); their layer classes that torch lacks are in
``torch_impl.layers``.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Callable

import torch
import torch.nn as nn
from torch.func import functional_call, vjp, vmap

from contract.cost_model import bookkeeping, gram_is_cheaper, in_bookkeeping  # noqa: F401 - re-exported

Tensor = torch.Tensor
Leaves = dict[str, Tensor]
GradSampler = Callable[[nn.Module, Tensor, Tensor], "Leaves | None"]
NormSampler = Callable[[nn.Module, Tensor, Tensor], "Tensor | None"]
SumSampler = Callable[[nn.Module, Tensor, Tensor, Tensor], Leaves]

GRAD_SAMPLERS: dict[type[nn.Module], GradSampler] = {}
NORM_SAMPLERS: dict[type[nn.Module], NormSampler] = {}
SUM_SAMPLERS: dict[type[nn.Module], SumSampler] = {}
KINDS: dict[type[nn.Module], str] = {}
NEEDS_PARAMS: set[Callable] = set()  # samplers called with ``params=`` (the layer's own leaves)


def _register(table: dict, kind: str, types: tuple[type[nn.Module], ...], needs_params: bool) -> Callable:
    def deco(fn: Callable) -> Callable:
        for t in types:
            table[t] = fn
            KINDS[t] = kind
        if needs_params:
            NEEDS_PARAMS.add(fn)
        return fn

    return deco


def register_grad_sampler(kind: str, *types: type[nn.Module], needs_params: bool = False
                          ) -> Callable[[GradSampler], GradSampler]:
    return _register(GRAD_SAMPLERS, kind, types, needs_params)


def register_norm_sampler(kind: str, *types: type[nn.Module], needs_params: bool = False
                          ) -> Callable[[NormSampler], NormSampler]:
    return _register(NORM_SAMPLERS, kind, types, needs_params)


def register_clipped_sum(kind: str, *types: type[nn.Module], needs_params: bool = False
                         ) -> Callable[[SumSampler], SumSampler]:
    return _register(SUM_SAMPLERS, kind, types, needs_params)


# Parameter-free module types through which a PARENT applies all of its own parameters (kind "projection",
# ``rules/projection.py``): the parent's site is recorded at the child's call and the child's rules are used.
SITE_TYPES: set[type[nn.Module]] = set()


# Site types whose rules take, as the input ``a``, the site call's input combined with the LAYER's output (the LSTM:
# [x_t; h_t-1], its hidden states known only after the recurrence that consumes the site's output):
# {type: fn(a, layer output) -> a}, applied by the engine when the layer's call returns (``register_site_input``).
SITE_INPUTS: dict[type[nn.Module], Callable[[Tensor, Tensor], Tensor]] = {}


def register_site_input(*types: type[nn.Module]) -> Callable:
    def deco(fn: Callable[[Tensor, Tensor], Tensor]) -> Callable[[Tensor, Tensor], Tensor]:
        for t in types:
            SITE_INPUTS[t] = fn
        return fn

    return deco


def site_input(layer: nn.Module) -> Callable[[Tensor, Tensor], Tensor] | None:
    """How the engine completes ``layer``'s recorded input from its output (None: the site call's input as is)."""
    return SITE_INPUTS.get(type(site_module(layer)))


def site_module(layer: nn.Module) -> nn.Module:
    """The module whose calls are ``layer``'s sites and whose kind's rules apply: the layer itself, or its one
    child of a ``SITE_TYPES`` type, which must apply every parameter the layer owns (else a clear error: a
    parameter it does not apply would silently get no gradient)."""
    kids = [c for c in layer.children() if type(c) in SITE_TYPES]
    if not kids:
        return layer
    own = {n for n, _ in layer.named_parameters(recurse=False)}
    if len(kids) > 1 or own != set(kids[0].applies):
        raise ValueError(f"{type(layer).__name__} owns {sorted(own)} but its projection children apply "
                         f"{[k.applies for k in kids]}: one projection child must apply all of them")
    return kids[0]


def kind_of(layer: nn.Module) -> str:
    """"linear" / "conv" / "embedding" / ... (its projection child's, if it has one), or "other" (the fallback)."""
    return KINDS.get(type(site_module(layer)), "other")


def sq(v: Tensor) -> Tensor:
    """(B,) squared L2 norm of each row of v (any trailing shape), without writing v.square(); a bfloat16 /
    float16 v is accumulated in float32 (a clipping norm never sums in bfloat16: docs/precision.md)."""
    acc = torch.float32 if v.dtype in (torch.bfloat16, torch.float16) else None
    return torch.linalg.vector_norm(v.reshape(v.shape[0], -1), dim=1, dtype=acc).square()


def leaf_params(layer: nn.Module, params: Leaves) -> Leaves:
    """The layer's own parameters (recurse=False), from the model's flat dict restricted to this layer."""
    return {leaf: params[leaf] for leaf, _ in layer.named_parameters(recurse=False)}


def fallback_per_example(layer: nn.Module, params: Leaves, a: Tensor, g: Tensor) -> Leaves:
    """Per-example gradients of ``layer``'s own parameters by vmap over examples of the layer's vjp alone.

    params: {leaf: tensor} of the layer (recurse=True; only its direct ones are differentiated); a, g: the
    layer's input and output cotangent of ONE call, batched on dim 0."""
    own = leaf_params(layer, params)
    rest = {k: v for k, v in params.items() if k not in own}

    def one(a1: Tensor, g1: Tensor) -> Leaves:
        _, pullback = vjp(lambda p: functional_call(layer, {**rest, **p}, (a1.unsqueeze(0),)), own)
        return pullback(g1.unsqueeze(0))[0]

    return vmap(one)(a, g)


def _call(sampler: Callable, layer: nn.Module, params: Leaves | None, *args: Tensor) -> object:
    """``sampler(site, *args)``, with ``params=`` the layer's own leaves for a kind registered ``needs_params``."""
    site = site_module(layer)
    if sampler not in NEEDS_PARAMS:
        return sampler(site, *args)
    if params is None:
        raise ValueError(f"the {KINDS[type(site)]!r} rules of {type(layer).__name__} need the layer's parameters: "
                         "pass params={leaf: tensor}")
    return sampler(site, *args, params=leaf_params(layer, params))


def per_example(layer: nn.Module, params: Leaves, a: Tensor, g: Tensor) -> Leaves:
    """The layer kind's grad sampler, or the fallback (no kind, or an instance the kind's rule does not cover).

    params: {leaf: tensor} of the layer (its children's too, for the fallback)."""
    if a.is_floating_point() and a.dtype != g.dtype:  # autocast: a float32 input whose op ran in bfloat16
        a = a.to(g.dtype)
    sampler = GRAD_SAMPLERS.get(type(site_module(layer)))
    out = None if sampler is None else _call(sampler, layer, params, a, g)
    return out if out is not None else fallback_per_example(layer, params, a, g)


def norm_sq(layer: nn.Module, a: Tensor, g: Tensor, params: Leaves | None = None) -> Tensor | None:
    """(B,) squared per-example norm without per-example gradients, or None: materialise this layer.
    ``params`` (the layer's {leaf: tensor}) is needed only by a kind registered ``needs_params``."""
    sampler = NORM_SAMPLERS.get(type(site_module(layer)))
    return None if sampler is None else _call(sampler, layer, params, a, g)


def clipped_sum(layer: nn.Module, a: Tensor, g: Tensor, w: Tensor, params: Leaves | None = None) -> Leaves:
    """sum_b w_b grad_b of a layer whose ``norm_sq`` was not None (its kind has a clipped-sum rule)."""
    return _call(SUM_SAMPLERS[type(site_module(layer))], layer, params, a, g, w)


def _register_every_kind() -> None:
    """Import every module of this package: each registers its kind, so adding a kind is adding its file."""
    for kind in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{kind.name}")


_register_every_kind()
