"""The workloads in Flax NNX (``jax_impl.models``), returning logits; the loss is chosen by name
(see ``contract.spec.LOSSES``).

A ``Net`` pairs a workload's neutral contract (``contract.spec.Workload``) with its module's structure: the
GraphDef, the abstract parameter State and an abstract instance (layer kinds and options, no arrays).
Parameters travel as an ``nnx.State``. Every function of this package takes ``model=`` as a registered name
(``contract.spec.MODELS``) or a ``Net`` built elsewhere (``Net.build``: a test's own network).
Input is NCHW like PyTorch; the convolutions run NHWC, and feature maps are flattened in torch's (C, H, W)
order (``models.common.flatten_chw``), so no layout difference is left for the weights to absorb.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np
import jax
import jax.numpy as jnp
from flax import nnx

from contract.spec import DEFAULT_MODEL, Workload, check_loss, check_model, check_sizes, constructor_sizes
from jax_impl.models import CLASSES
from jax_impl.models.common import PRECISION  # noqa: F401 - re-exported: every dot and conv uses it
from jax_impl.models.seed_cnn import SimpleCNN  # noqa: F401 - the seed's class name, kept importable here


@dataclass(frozen=True, eq=False)
class Net:
    """A workload's contract and its module's structure (hashable by identity: a jit static argument)."""

    spec: Workload
    graphdef: nnx.GraphDef
    abstract_state: nnx.State
    abstract_module: nnx.Module

    @classmethod
    def build(cls, spec: Workload, make: Callable[[nnx.Rngs], nnx.Module]) -> "Net":
        """``make(rngs) -> module`` is only traced (``nnx.eval_shape``): no parameter is allocated."""
        module = nnx.eval_shape(lambda: make(nnx.Rngs(0)))
        graphdef, state = nnx.split(module, nnx.Param)
        return cls(spec, graphdef, state, module)


def network_sizes(model: str) -> dict[str, int]:
    """{keyword: registered value} of the sizes a registered workload's network is built with (the transformer's
    ``seq_len``, ``width``, ...; empty for a network of fixed sizes): what ``make_model`` and ``variant`` may
    change."""
    return constructor_sizes(CLASSES[check_model(model).name])


def _sizes(name: str, sizes: dict[str, int]) -> dict[str, int]:
    return check_sizes(name, sizes, network_sizes(name))


def make_model(model: str = DEFAULT_MODEL, rngs: nnx.Rngs | None = None, **sizes: int) -> nnx.Module:
    """A freshly initialised module of a registered workload (Flax's own init; the shared weights come from
    ``compare.weights``); ``sizes``: other values of its ``network_sizes``."""
    name = check_model(model).name
    return CLASSES[name](**_sizes(name, sizes), rngs=rngs or nnx.Rngs(0))


def init_weights(seed: int = 0, model: str | Workload = DEFAULT_MODEL, **sizes: int) -> dict[str, np.ndarray]:
    """Canonical weights of Flax's own init from ``nnx.Rngs(seed)`` (the comparisons start from PyTorch's:
    ``compare.weights.init_weights``). ``sizes``: a variant of the registered network (``network_sizes``), its
    weights' shapes its own."""
    from jax_impl.weights import canonical_shapes, to_canonical

    name = check_model(model).name
    module = make_model(name, nnx.Rngs(seed), **sizes)
    net: str | Net = name
    if sizes:  # the variant's parameters under a contract of their own (the conversion reads only those)
        reg = check_model(name)
        spec = Workload(f"{name}_variant", reg.input_shape, reg.num_classes, canonical_shapes(module),
                        vocab_size=reg.vocab_size)
        net = variant(spec, name, **sizes)
    return to_canonical(nnx.state(module, nnx.Param), model=net)


def variant(spec: Workload, model: str, **sizes: int) -> Net:
    """The ``Net`` of a registered workload's network built with other ``sizes`` (``network_sizes``), under its
    own contract ``spec`` (a ``Workload`` in no registry whose ``param_shapes`` are the variant's, e.g. the
    transformer at another sequence length)."""
    name = check_model(model).name
    cls, sizes = CLASSES[name], _sizes(name, sizes)
    return Net.build(spec, lambda rngs: cls(**sizes, rngs=rngs))


@lru_cache(maxsize=None)
def _registered(name: str) -> Net:
    cls = CLASSES[name]
    return Net.build(check_model(name), lambda rngs: cls(rngs=rngs))


def resolve(model: "str | Net") -> Net:
    """A registered name or a ``Net`` -> the ``Net`` (one per registered name)."""
    return model if isinstance(model, Net) else _registered(check_model(model).name)


def log_probs(logits: jax.Array) -> jax.Array:
    return jax.nn.log_softmax(logits, axis=1)


def loss_fn(logits: jax.Array, y: jax.Array, loss: str) -> jax.Array:
    """Mean over the batch. ``"seed"`` is the seed's ``nll_loss`` on raw logits, i.e. ``-mean(logits[y])``."""
    check_loss(loss)
    if logits.dtype in (jnp.bfloat16, jnp.float16):  # the loss head runs in float32 (docs/precision.md)
        logits = logits.astype(jnp.float32)
    scores = logits if loss == "seed" else log_probs(logits)
    return -jnp.mean(jnp.take_along_axis(scores, y[:, None], axis=1))


# The seed model's structure without allocating parameters (kept for the seed-specific modules).
GRAPHDEF, ABSTRACT_STATE = resolve(DEFAULT_MODEL).graphdef, resolve(DEFAULT_MODEL).abstract_state


def apply(params: nnx.State, x: jax.Array, model: str | Net = DEFAULT_MODEL) -> jax.Array:
    """Pure forward: ``params`` (as made by ``jax_impl.weights.to_native``) and x -> logits."""
    return nnx.merge(resolve(model).graphdef, params)(x)
