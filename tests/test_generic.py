"""The genericity proof: two small networks built HERE, in no registry, on both sides, get exact
per-sample gradients from every method and every DP strategy with no library code of their own.

They exercise what the registered workloads do not: a conv with a non-square kernel, stride, padding and
dilation; a linear layer applied at T positions on both norm routes (Gram: T (d + p) < d p, and
materialise), a linear layer without bias called twice per forward (two sites, summed), an embedding with
repeated tokens, and a layer of no known kind (``Scale``: a learned per-feature scale) that the vmap
fallback materialises. Canonical names = the torch state_dict; the JAX modules use the same attribute names.
"""
from __future__ import annotations

import importlib

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from flax import nnx

from compare.frameworks import FRAMEWORKS
from contract.cost_model import forced_routes
from compare.spec import Workload, make_batch
from jax_impl.model import Net as JaxNet
from jax_impl.models.common import PRECISION, nhwc
from torch_impl.model import Net as TorchNet
from workload_checks import assert_close, check_dp, check_methods, dp_update, per_sample, skip_without_peer


# ---- the two networks, mirrored -----------------------------------------------------------------------------

class TorchScale(nn.Module):
    """No rule registered for this kind: per-sample gradients by the fallback."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.linspace(0.5, 1.5, n))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h * self.weight


class JaxScale(nnx.Module):
    def __init__(self, n: int) -> None:
        self.weight = nnx.Param(jnp.linspace(0.5, 1.5, n))

    def __call__(self, h):
        return h * self.weight[...].reshape(1, -1)  # explicit: the suite raises on rank promotion


class TorchOddCNN(nn.Module):
    """x (B, 2, 7, 6) -> conv 2->3 k(3,2) s(2,1) p(1,0) d(1,2) -> (B, 3, 4, 4) -> positions (B, 16, 3) ->
    linear 3->4 at 16 positions (materialised), relu, mean -> scale -> linear 4->3."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2))
        self.mix = nn.Linear(3, 4)
        self.scale = TorchScale(4)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.conv(x))
        h = h.permute(0, 2, 3, 1).reshape(x.shape[0], -1, 3)  # positions in (H, W) order, channels last
        return self.head(self.scale(F.relu(self.mix(h)).mean(dim=1)))


class JaxOddCNN(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs) -> None:
        self.conv = nnx.Conv(2, 3, (3, 2), strides=(2, 1), padding=((1, 1), (0, 0)), kernel_dilation=(1, 2),
                             precision=PRECISION, rngs=rngs)
        self.mix = nnx.Linear(3, 4, precision=PRECISION, rngs=rngs)
        self.scale = JaxScale(4)
        self.head = nnx.Linear(4, 3, precision=PRECISION, rngs=rngs)

    def __call__(self, x):
        h = jnp.tanh(self.conv(nhwc(x)))
        h = h.reshape(x.shape[0], -1, 3)
        return self.head(self.scale(nnx.relu(self.mix(h)).mean(axis=1)))


class TorchTokens(nn.Module):
    """ids (B, 6) < 5 -> embedding 5x8 -> pairs concatenated (B, 3, 16) -> linear 16->16 at 3 positions (Gram),
    tanh, mean -> tied 16->16 (no bias) applied twice -> linear 16->2."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(5, 8)
        self.seq = nn.Linear(16, 16)
        self.tied = nn.Linear(16, 16, bias=False)
        self.head = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.emb(x).reshape(x.shape[0], 3, 16)
        h = torch.tanh(self.seq(h)).mean(dim=1)
        return self.head(self.tied(torch.tanh(self.tied(h))))


class JaxTokens(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs) -> None:
        self.emb = nnx.Embed(5, 8, rngs=rngs)
        self.emb.dtype = None  # compute in the parameters' dtype (see jax_impl.models.embed)
        self.seq = nnx.Linear(16, 16, precision=PRECISION, rngs=rngs)
        self.tied = nnx.Linear(16, 16, use_bias=False, precision=PRECISION, rngs=rngs)
        self.head = nnx.Linear(16, 2, precision=PRECISION, rngs=rngs)

    def __call__(self, x):
        h = self.emb(x).reshape(x.shape[0], 3, 16)
        h = jnp.tanh(self.seq(h)).mean(axis=1)
        return self.head(self.tied(jnp.tanh(self.tied(h))))


CASES = {  # name: (torch class, JAX class, one example's input shape, classes, vocab)
    "odd_cnn": (TorchOddCNN, JaxOddCNN, (2, 7, 6), 3, None),
    "tokens": (TorchTokens, JaxTokens, (6,), 2, 5),
}


def build(case: str) -> tuple[Workload, dict[str, TorchNet | JaxNet], dict[str, np.ndarray]]:
    """(its Workload, {framework: Net}, canonical float32 weights from torch's init) -- no registry touched."""
    torch_cls, jax_cls, shape, classes, vocab = CASES[case]
    torch.manual_seed(0)
    module = torch_cls()
    weights = {k: v.detach().numpy().astype(np.float32) for k, v in module.state_dict().items()}
    spec = Workload(case, shape, classes, {k: v.shape for k, v in weights.items()}, vocab_size=vocab)
    nets = {"torch": TorchNet(spec, module), "jax": JaxNet.build(spec, lambda rngs: jax_cls(rngs=rngs))}
    return spec, nets, weights


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    return build(request.param)


def test_custom_layers_take_the_intended_routes(case):
    """The test networks reach the routes they are here for (else the proof would be weaker than it says)."""
    spec, nets, weights = case
    rules = importlib.import_module("torch_impl.rules")
    kinds = {name: rules.kind_of(m) for name, m in nets["torch"].module.named_modules() if name}
    if spec.name == "odd_cnn":
        assert kinds == {"conv": "conv", "mix": "linear", "scale": "other", "head": "linear"}
    else:
        assert kinds == {"emb": "embedding", "seq": "linear", "tied": "linear", "head": "linear"}
        x, _ = make_batch(4, seed=0, model=spec)
        assert all(len(set(row)) < len(row) for row in x), "every example repeats a token"


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_every_method_equals_the_loop(fw, case):
    spec, nets, weights = case
    check_methods(fw, weights, nets[fw], batch=make_batch(4, seed=1, dtype="float64", model=spec))


def test_torch_equals_jax(case):
    spec, nets, weights = case
    x, y = make_batch(4, seed=1, dtype="float64", model=spec)
    for loss in ("nll_log_softmax", "seed"):
        assert_close(per_sample("jax", weights, x, y, "loop", nets["jax"], loss),
                     per_sample("torch", weights, x, y, "loop", nets["torch"], loss), f"torch vs jax {loss}")


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("conv_rule", [None, "gram", "materialize"])
def test_every_dp_strategy(fw, case, conv_rule, monkeypatch):
    """materialize / ghost / bk (and the peer library) = the numpy reference; each conv norm rule forced too.
    Opacus' ghost clipping refuses the tied layer of "tokens" (NotImplementedError, checked).
    JAX's jitted steps are cached per model, so a forced rule is traced afresh by a fresh Net."""
    spec, nets, weights = case
    if conv_rule is not None:
        if spec.name != "odd_cnn":
            pytest.skip("no convolution")
        nets = build(spec.name)[1]
    batch = make_batch(4, seed=3, dtype="float64", model=spec)
    # Opacus' ghost clipping refuses a layer called twice (its norm per call would not be the norm of the sum);
    # our ghost / bk sum the layer's sites and take the norm of that.
    tied_opacus = fw == "torch" and spec.name == "tokens"
    with forced_routes(conv=conv_rule):
        check_dp(fw, weights, nets[fw], ("materialize", "ghost", "bk"), peer=conv_rule is None and not tied_opacus,
                 batch=batch)
    if conv_rule is None and tied_opacus:
        skip_without_peer(fw)
        with pytest.raises(NotImplementedError, match="Parameter tying is not supported with Ghost Clipping"):
            dp_update(fw, weights, *batch, nets[fw], clipping=None, clip=1.0, nm=0.0, noise=None, peer="opacus_ghost")


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("route", ["gram", "sort"])
def test_embedding_norm_routes(fw, route):
    """Both embedding norm forms (the T x T equality Gram, the per-row sort) on repeated tokens = the reference."""
    spec, nets, weights = build("tokens")
    with forced_routes(embedding=route):
        check_dp(fw, weights, nets[fw], ("ghost", "bk"), peer=False, batch=make_batch(4, seed=3, dtype="float64",
                                                                                    model=spec))
