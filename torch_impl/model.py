"""The workloads in PyTorch (``torch_impl.models``), returning logits; the loss is chosen by name
(see ``contract.spec.LOSSES``).

A ``Net`` pairs a workload's neutral contract (``contract.spec.Workload``) with its module as a meta-device
template: structure only, parameters travel in the dicts given to ``functional_call``. Every function of this
package takes ``model=`` as a registered name (``contract.spec.MODELS``) or a ``Net`` built elsewhere (a test's
own network, in no registry).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from contract.spec import DEFAULT_MODEL, Workload, check_loss, check_model, check_sizes, constructor_sizes
from torch_impl.models import CLASSES
from torch_impl.models.seed_cnn import SimpleCNN  # noqa: F401 - the seed's class name, kept importable here


@dataclass(frozen=True, eq=False)
class Net:
    """A workload's contract and its module (moved to the meta device: no parameter memory)."""

    spec: Workload
    module: nn.Module

    def __post_init__(self) -> None:
        shapes = {k: tuple(v.shape) for k, v in self.module.state_dict().items()}
        if shapes != self.spec.param_shapes:
            raise ValueError(f"model {self.spec.name!r}: module parameters {shapes} != the spec's "
                             f"{self.spec.param_shapes}")
        self.module.to("meta")


def network_sizes(model: str) -> dict[str, int]:
    """{keyword: registered value} of the sizes a registered workload's network is built with (the transformer's
    ``seq_len``, ``width``, ...; empty for a network of fixed sizes): what ``make_model`` and ``variant`` may
    change."""
    return constructor_sizes(CLASSES[check_model(model).name])


def _sizes(name: str, sizes: dict[str, int]) -> dict[str, int]:
    return check_sizes(name, sizes, network_sizes(name))


def make_model(model: str = DEFAULT_MODEL, **sizes: int) -> nn.Module:
    """A freshly initialised module of a registered workload (PyTorch's default init, from torch's global RNG);
    ``sizes``: other values of its ``network_sizes``."""
    name = check_model(model).name
    return CLASSES[name](**_sizes(name, sizes))


def init_weights(seed: int = 0, model: str | Workload = DEFAULT_MODEL, **sizes: int) -> dict[str, np.ndarray]:
    """Canonical weights of PyTorch's default init right after ``torch.manual_seed(seed)`` (seed 0: the seed
    script's weights); the weights every comparison starts from (``compare.weights.init_weights``). ``sizes``:
    a variant of the registered network (``network_sizes``), its weights' shapes its own."""
    name = check_model(model).name
    torch.manual_seed(seed)
    return {k: v.detach().cpu().numpy().copy() for k, v in make_model(name, **sizes).state_dict().items()}


def variant(spec: Workload, model: str, **sizes: int) -> Net:
    """The ``Net`` of a registered workload's network built with other ``sizes`` (``network_sizes``), under its
    own contract ``spec`` (a ``Workload`` in no registry whose ``param_shapes`` are the variant's, e.g. the
    transformer at another sequence length)."""
    name = check_model(model).name
    return Net(spec, CLASSES[name](**_sizes(name, sizes)))


@lru_cache(maxsize=None)
def _registered(name: str) -> Net:
    return Net(check_model(name), make_model(name))


def resolve(model: "str | Net") -> Net:
    """A registered name or a ``Net`` -> the ``Net`` (one cached template per registered name)."""
    return model if isinstance(model, Net) else _registered(check_model(model).name)


def log_probs(logits: torch.Tensor) -> torch.Tensor:
    return F.log_softmax(logits, dim=1)


def loss_fn(logits: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """Mean over the batch. ``"seed"`` is the seed's ``nll_loss`` on raw logits, i.e. ``-mean(logits[y])``."""
    check_loss(loss)
    if logits.dtype in (torch.bfloat16, torch.float16):  # the loss head runs in float32 (docs/precision.md)
        logits = logits.float()
    if loss == "seed":
        return F.nll_loss(logits, y)
    return F.nll_loss(log_probs(logits), y)
