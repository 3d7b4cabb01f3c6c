"""Per-layer-KIND rules for per-example gradients, their norms and clipped sums, and each kind's native weight
layout (mirrors ``torch_impl.rules``).

Keyed by Flax NNX module type, registered by decorator or call, one small file per kind:
  layout         ``register_layout(type, {native leaf: (canonical leaf, permutation or None)})``: how the
                 kind's parameters differ from PyTorch's ``state_dict`` (read by ``jax_impl.weights``)
  grad sampler   (layer, a, g) -> {native leaf: (B, *leaf shape)}, or None: the instance has options the
                 rule does not cover (then the fallback)
  norm sampler   (layer, a, g) -> (B,) squared norms, or None = "materialise me" (the kind's cost model, or an
                 instance the rule does not cover)
  clipped sum    (layer, a, g, w) -> {native leaf: leaf shape} = sum_b w_b grad_b, no per-example gradients
with a = the layer's input, g = d(sum of per-example losses)/d(layer output) (conv: NHWC; kernels (in, out)
and HWIO). The layer is merged with its parameters (``per_layer.layers``): a rule reads them from it.
A layer of no registered kind, or called more than once per forward, is materialised by
``fallback_per_example``: vmap over examples of the vjp of that layer ALONE. A layer that applies all its own
parameters through a parameter-free ``Projection`` child is recorded at that child's call and takes its rules
(``site_module``, kind "projection"); the LSTM likewise at its ``GateInput`` child, its recorded input completed by
its hidden states when the layer returns (``site_input``). Every dot uses ``PRECISION``.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from contract.cost_model import bookkeeping, gram_is_cheaper, in_bookkeeping  # noqa: F401 - re-exported

Leaves = dict[str, jax.Array]
GradSampler = Callable[[nnx.Module, jax.Array, jax.Array], "Leaves | None"]
NormSampler = Callable[[nnx.Module, jax.Array, jax.Array], "jax.Array | None"]
SumSampler = Callable[[nnx.Module, jax.Array, jax.Array, jax.Array], Leaves]

GRAD_SAMPLERS: dict[type, GradSampler] = {}
NORM_SAMPLERS: dict[type, NormSampler] = {}
SUM_SAMPLERS: dict[type, SumSampler] = {}
KINDS: dict[type, str] = {}
Layout = dict[str, tuple[str, "tuple[int, ...] | None"]]  # native leaf -> (canonical leaf, permutation or None)
KIND_LAYOUTS: dict[type, Layout] = {}


def register_layout(layout: Layout, *types: type) -> None:
    """The native <-> canonical layout of a kind's leaves (a leaf not listed keeps its name and layout)."""
    for t in types:
        KIND_LAYOUTS[t] = layout


def _register(table: dict, kind: str, *types: type) -> Callable:
    def deco(fn: Callable) -> Callable:
        for t in types:
            table[t] = fn
            KINDS[t] = kind
        return fn

    return deco


def register_grad_sampler(kind: str, *types: type) -> Callable[[GradSampler], GradSampler]:
    return _register(GRAD_SAMPLERS, kind, *types)


def register_norm_sampler(kind: str, *types: type) -> Callable[[NormSampler], NormSampler]:
    return _register(NORM_SAMPLERS, kind, *types)


def register_clipped_sum(kind: str, *types: type) -> Callable[[SumSampler], SumSampler]:
    return _register(SUM_SAMPLERS, kind, *types)


# Parameter-free module types through which a PARENT applies all of its own parameters (kind "projection",
# ``rules/projection.py``): the parent's site is recorded at the child's call and the child's rules are used.
SITE_TYPES: set[type] = set()


# Site types whose rules take, as the input ``a``, the site call's input combined with the LAYER's output (the LSTM:
# [x_t; h_t-1]; mirrors torch's): {type: fn(a, layer output) -> a}, applied by the engine when the layer returns.
SITE_INPUTS: dict[type, Callable[[jax.Array, jax.Array], jax.Array]] = {}


def register_site_input(*types: type) -> Callable:
    def deco(fn: Callable[[jax.Array, jax.Array], jax.Array]) -> Callable[[jax.Array, jax.Array], jax.Array]:
        for t in types:
            SITE_INPUTS[t] = fn
        return fn

    return deco


def site_input(layer: nnx.Module) -> Callable[[jax.Array, jax.Array], jax.Array] | None:
    """How the engine completes ``layer``'s recorded input from its output (None: the site call's input as is)."""
    return SITE_INPUTS.get(type(site_module(layer)))


def site_child(layer: nnx.Module) -> tuple[str, nnx.Module] | None:
    """(attribute, child) of ``layer``'s one child of a ``SITE_TYPES`` type, which must apply every parameter
    the layer owns (else a clear error), or None."""
    kids = [(k, v) for k, v in vars(layer).items() if type(v) in SITE_TYPES]
    if not kids:
        return None
    own = {k for k, v in vars(layer).items() if isinstance(v, nnx.Param)}
    if len(kids) > 1 or own != set(kids[0][1].applies):
        raise ValueError(f"{type(layer).__name__} owns {sorted(own)} but its projection children apply "
                         f"{[v.applies for _, v in kids]}: one projection child must apply all of them")
    return kids[0]


def site_module(layer: nnx.Module) -> nnx.Module:
    """The module whose calls are ``layer``'s sites and whose kind's rules apply (mirrors torch's)."""
    child = site_child(layer)
    return layer if child is None else child[1]


def kind_of(layer: nnx.Module) -> str:
    """"linear" / "conv" / "embedding" / ... (its projection child's, if it has one), or "other" (the fallback)."""
    return KINDS.get(type(site_module(layer)), "other")


def sq(v: jax.Array) -> jax.Array:
    """(B,) squared L2 norm of each row of v (any trailing shape); a bfloat16 / float16 v is upcast to float32
    before squaring (a clipping norm never sums in bfloat16: docs/precision.md)."""
    v = v.astype(jnp.promote_types(v.dtype, jnp.float32))
    return jnp.square(v).reshape(v.shape[0], -1).sum(axis=1)


def fallback_per_example(layer: nnx.Module, a: jax.Array, g: jax.Array) -> Leaves:
    """Per-example gradients of ``layer``'s own parameters: vmap over examples of the layer's vjp alone."""
    graphdef, params, rest = nnx.split(layer, nnx.Param, ...)

    def one(a1: jax.Array, g1: jax.Array) -> nnx.State:
        _, pullback = jax.vjp(lambda p: nnx.merge(graphdef, p, rest)(a1[None]), params)
        return pullback(g1[None])[0]

    pure = nnx.to_pure_dict(jax.vmap(one)(a, g))
    return {leaf: v for leaf, v in pure.items() if not isinstance(v, dict)}  # its children have their own sites


def per_example(layer: nnx.Module, a: jax.Array, g: jax.Array) -> Leaves:
    """The layer kind's grad sampler, or the fallback (no kind, or an instance the kind's rule does not cover)."""
    site = site_module(layer)
    sampler = GRAD_SAMPLERS.get(type(site))
    out = None if sampler is None else sampler(site, a, g)
    return out if out is not None else fallback_per_example(layer, a, g)


def norm_sq(layer: nnx.Module, a: jax.Array, g: jax.Array) -> jax.Array | None:
    """(B,) squared per-example norm without per-example gradients, or None: materialise this layer."""
    site = site_module(layer)
    sampler = NORM_SAMPLERS.get(type(site))
    return None if sampler is None else sampler(site, a, g)


def clipped_sum(layer: nnx.Module, a: jax.Array, g: jax.Array, w: jax.Array) -> Leaves:
    """sum_b w_b grad_b of a layer whose ``norm_sq`` was not None (its kind has a clipped-sum rule)."""
    site = site_module(layer)
    return SUM_SAMPLERS[type(site)](site, a, g, w)


def _register_every_kind() -> None:
    """Import every module of this package: each registers its kind, so adding a kind is adding its file."""
    for kind in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{kind.name}")


_register_every_kind()
