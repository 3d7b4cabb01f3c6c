"""The LSTM workload: parameter count and names, the forward against nn.LSTM, the canonical <-> Flax gate
mapping, and every per-sample method and DP strategy (and the peers) exact in float64 on both sides.

The registered workload has T = 256; the method / strategy checks run on a small variant built here (T = 6,
vocabulary 7, embedding 3, hidden 4: the same classes, in no registry), where the cost model picks the materialised
norm (``test_norm_rule_follows_the_cost_model``); the Gram norm is forced too (``contract.cost_model.forced_routes``)."""
from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
import torch

from compare.frameworks import FRAMEWORKS, impl_module
from contract.cost_model import forced_routes
from compare.spec import MODELS, Workload, make_batch
from compare.weights import init_weights
from jax_impl.model import Net as JaxNet
from jax_impl.models.lstm import LSTMNet as JaxLSTMNet
from torch_impl.model import Net as TorchNet
from torch_impl.models.lstm import LSTMNet as TorchLSTMNet
from workload_checks import assert_close, check_dp, check_methods, dp_update, per_sample

T, VOCAB, EMBED, HIDDEN = 6, 7, 3, 4


def small(seed: int = 0) -> tuple[Workload, dict[str, TorchNet | JaxNet], dict[str, np.ndarray]]:
    """(its Workload, {framework: Net}, canonical float32 weights from torch's init): fresh Nets each call
    (JAX's jitted functions are cached per Net, so a forced norm rule needs a fresh one)."""
    torch.manual_seed(seed)
    module = TorchLSTMNet(VOCAB, EMBED, HIDDEN)
    weights = {k: v.detach().numpy().astype(np.float32) for k, v in module.state_dict().items()}
    spec = Workload("lstm_small", (T,), 2, {k: v.shape for k, v in weights.items()}, vocab_size=VOCAB)
    nets = {"torch": TorchNet(spec, module),
            "jax": JaxNet.build(spec, lambda rngs: JaxLSTMNet(VOCAB, EMBED, HIDDEN, rngs=rngs))}
    return spec, nets, weights


@pytest.fixture(scope="module")
def case():
    return small()


def _nn_lstm(weights: dict[str, np.ndarray], prefix: str = "lstm.") -> torch.nn.LSTM:
    w = {k[len(prefix):]: torch.tensor(v, dtype=torch.float64) for k, v in weights.items() if k.startswith(prefix)}
    lstm = torch.nn.LSTM(w["weight_ih_l0"].shape[1], w["weight_hh_l0"].shape[1], batch_first=True).double()
    lstm.load_state_dict(w)
    return lstm


# ---- the workload, its parameters and the layout --------------------------------------------------------------

def test_parameter_count_and_nn_lstm_names():
    """1,081,402 parameters; the LSTM's names, shapes and default init are nn.LSTM's (same RNG draws)."""
    spec = MODELS["lstm"]
    assert spec.num_params == 1_081_402 and spec.input_shape == (256,) and spec.vocab_size == 10004
    w = init_weights(0, "lstm")
    assert sum(v.size for v in w.values()) == 1_081_402
    torch.manual_seed(0)
    torch.nn.Embedding(10004, 100)  # the model's first layer: consumes the same draws first
    ref = torch.nn.LSTM(100, 100, batch_first=True)
    assert {f"lstm.{k}": tuple(v.shape) for k, v in ref.state_dict().items()} == \
        {k: v for k, v in spec.param_shapes.items() if k.startswith("lstm.")}
    for k, v in ref.state_dict().items():
        assert np.array_equal(w[f"lstm.{k}"], v.numpy()), k


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_forward_equals_nn_lstm(fw: str, case):
    """The hand-written torch LSTM and the JAX scan cell, loaded with the canonical weights, give nn.LSTM's hidden
    states (float64, random weights: any gate permutation or a dropped bias would show)."""
    spec, nets, weights = case
    rng = np.random.default_rng(0)
    w = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in weights.items()}
    x = rng.standard_normal((3, T, EMBED))
    with torch.no_grad():
        ref = _nn_lstm(w)(torch.tensor(x))[0].numpy()
    if fw == "torch":
        from torch_impl.models.lstm import LSTM

        layer = LSTM(EMBED, HIDDEN).double()
        layer.load_state_dict({k[5:]: torch.tensor(v, dtype=torch.float64) for k, v in w.items() if k.startswith("lstm.")})
        with torch.no_grad():
            got = layer(torch.tensor(x)).numpy()
    else:
        import jax.numpy as jnp
        from flax import nnx

        from jax_impl.weights import to_native

        module = nnx.merge(nets["jax"].graphdef, to_native(w, "float64", "cpu", model=nets["jax"]))
        got = np.asarray(module.lstm(jnp.asarray(x)))
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)


def test_gate_mapping_canonical_to_flax():
    """KIND_LAYOUTS[LSTM]: kernel_ih = weight_ih_l0^T, kernel_hh = weight_hh_l0^T with the gate blocks in
    PyTorch's order (i, f, g, o) along 4H, and the two biases as two leaves. Weights whose every entry encodes
    (gate, row, column) and two different biases tell any reordering, transpose or bias swap apart; then the
    round trip, and one LSTM step by hand with those weights (each gate a different function)."""
    import jax.numpy as jnp
    from flax import nnx

    from jax_impl.weights import to_canonical, to_native

    spec, nets, weights = small()
    w = dict(weights)
    gate = np.repeat(np.arange(4), HIDDEN)[:, None]  # row r of the 4H axis belongs to gate r // H
    row = np.tile(np.arange(HIDDEN), 4)[:, None]
    w["lstm.weight_ih_l0"] = (1000 * (gate + 1) + 10 * row + np.arange(EMBED)[None]).astype(np.float32)
    w["lstm.weight_hh_l0"] = (-1000 * (gate + 1) - 10 * row - np.arange(HIDDEN)[None]).astype(np.float32)
    w["lstm.bias_ih_l0"] = np.arange(4 * HIDDEN, dtype=np.float32) + 0.25
    w["lstm.bias_hh_l0"] = -np.arange(4 * HIDDEN, dtype=np.float32) - 0.5
    state = nnx.to_pure_dict(to_native(w, "float32", "cpu", model=nets["jax"]))["lstm"]
    for k in range(4):  # gate k: i, f, g, o
        block = slice(k * HIDDEN, (k + 1) * HIDDEN)
        assert np.array_equal(np.asarray(state["kernel_ih"])[:, block], w["lstm.weight_ih_l0"][block].T)
        assert np.array_equal(np.asarray(state["kernel_hh"])[:, block], w["lstm.weight_hh_l0"][block].T)
    assert np.array_equal(np.asarray(state["bias_ih"]), w["lstm.bias_ih_l0"])
    assert np.array_equal(np.asarray(state["bias_hh"]), w["lstm.bias_hh_l0"])
    back = to_canonical(to_native(w, "float32", "cpu", model=nets["jax"]), model=nets["jax"])
    assert all(np.array_equal(back[k], w[k]) for k in w)
    # One step from a zero state, small weights (the encoded ones saturate): h_1 = o tanh(i g), by hand.
    rng = np.random.default_rng(1)
    w2 = {k: (0.3 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in weights.items()}
    x1 = rng.standard_normal((1, 1, EMBED))
    z = x1[0, 0] @ w2["lstm.weight_ih_l0"].T.astype(np.float64) + w2["lstm.bias_ih_l0"] + w2["lstm.bias_hh_l0"]
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    i, f, g, o = np.split(z, 4)
    expected = sig(o) * np.tanh(sig(i) * np.tanh(g))
    module = nnx.merge(nets["jax"].graphdef, to_native(w2, "float64", "cpu", model=nets["jax"]))
    np.testing.assert_allclose(np.asarray(module.lstm(jnp.asarray(x1)))[0, 0], expected, rtol=1e-12)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_norm_rule_follows_the_cost_model(fw: str, case):
    """gram_is_cheaper(T, in + H, 4H): the workload (T=256, 100 + 100 -> 400) materialises; the small variant
    (T=6, 3 + 4 -> 16: 6 * 23 = 138 > 112) too; at T=4 (92 < 112) Gram. Same choice on both sides."""
    rule = importlib.import_module(f"{fw}_impl.rules.lstm").norm_rule
    site_module = importlib.import_module(f"{fw}_impl.rules").site_module
    _, nets, _ = case
    registered = impl_module(fw, "model").make_model("lstm").lstm if fw == "torch" else \
        impl_module(fw, "model").resolve("lstm").abstract_module.lstm
    layer = nets[fw].module.lstm if fw == "torch" else nets[fw].abstract_module.lstm

    def route(module, t: int, d_in: int, hidden: int) -> str:  # the site's a = u (in + H wide), g = dz (4H)
        return rule(site_module(module), np.zeros((2, t, d_in + hidden)), np.zeros((2, t, 4 * hidden)))

    assert route(registered, 256, 100, 100) == "materialize"
    assert [route(layer, n, EMBED, HIDDEN) for n in (4, 6)] == ["gram", "materialize"]


def test_torch_vmap_cannot_batch_nn_lstm():
    """Why the model's LSTM is hand-written: torch.func.vmap has no batching rule for nn.LSTM's fused op."""
    from torch.func import functional_call, grad, vmap

    lstm = torch.nn.LSTM(3, 4, batch_first=True).double()
    params = {k: v.detach() for k, v in lstm.named_parameters()}
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="Batching rule not implemented for aten::lstm"):
        vmap(lambda x1: functional_call(lstm, params, (x1[None],))[0])(x)
    with pytest.raises(RuntimeError):
        vmap(grad(lambda p, x1: functional_call(lstm, p, (x1[None],))[0].sum()), in_dims=(None, 0))(params, x)


# ---- every method and strategy, float64 --------------------------------------------------------------------

@pytest.mark.parametrize("fw", [pytest.param("torch", marks=pytest.mark.slow), "jax"])  # torch: compile ~30 s
def test_every_method_equals_the_loop(fw: str, case):
    """torch: loop, vmap, compile, per_layer, opacus_hooks / opacus_ew / opacus_functorch (DPLSTM swapped in).
    JAX: loop, vmap, vmap_nojit, per_layer (vmap_patches: no convolution)."""
    spec, nets, weights = case
    check_methods(fw, weights, nets[fw], batch=make_batch(4, seed=1, dtype="float64", model=spec))


def test_opacus_runs_dplstm():
    """The Opacus methods and peers run ``opacus.layers.DPLSTM`` in the LSTM's place (same parameter names), so
    ExpandedWeights applies too (DPLSTM's parameters are its RNNLinear children's, nn.Linear subclasses)."""
    pytest.importorskip("opacus")
    from opacus.layers import DPLSTM

    from torch_impl.opacus_methods import live_module

    _, nets, weights = small()
    module = live_module(nets["torch"])
    assert type(module.lstm) is DPLSTM and set(dict(module.named_parameters())) == set(weights)
    assert impl_module("torch", "per_sample").applicable_methods(nets["torch"])["opacus_ew"] is None


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_per_layer_chunks_and_fallback(fw: str, case, monkeypatch):
    """per_layer with chunk_size (torch: slices; JAX: lax.map over one-example rules) and with the LSTM recorded at
    its own call (its ``GateInput`` no site type: no rule, the vmap fallback of the layer alone) = the loop."""
    spec, nets, weights = case
    x, y = make_batch(5, seed=2, dtype="float64", model=spec)
    ref = per_sample(fw, weights, x, y, "loop", nets[fw])
    ps = impl_module(fw, "per_sample")
    got = ps.per_sample_grads(weights, x, y, method="per_layer", dtype="float64", device="cpu", chunk_size=2,
                              model=nets[fw])
    assert_close(got, ref, f"{fw} per_layer chunk 2")
    rules = impl_module(fw, "rules")
    lstm = nets[fw].module.lstm if fw == "torch" else nets[fw].abstract_module.lstm
    monkeypatch.setattr(rules, "SITE_TYPES", rules.SITE_TYPES - {type(rules.site_module(lstm))})
    assert rules.kind_of(lstm) == "other"
    fresh = small()[1][fw]
    assert_close(ps.per_sample_grads(weights, x, y, method="per_layer", dtype="float64", device="cpu", model=fresh),
                 ref, f"{fw} per_layer, LSTM by the vmap fallback")


@pytest.mark.parametrize("loss", ["nll_log_softmax", "seed"])
def test_torch_equals_jax(loss: str, case):
    spec, nets, weights = case
    x, y = make_batch(4, seed=1, dtype="float64", model=spec)
    assert_close(per_sample("jax", weights, x, y, "loop", nets["jax"], loss),
                 per_sample("torch", weights, x, y, "loop", nets["torch"], loss), f"torch vs jax {loss}")


def test_torch_equals_jax_registered_workload():
    """The registered workload (T = 256), B = 2: the per_layer rules of both sides agree (float64)."""
    w = init_weights(0, "lstm")
    x, y = make_batch(2, seed=1, dtype="float64", model="lstm")
    assert_close(per_sample("jax", w, x, y, "per_layer", "lstm"), per_sample("torch", w, x, y, "per_layer", "lstm"),
                 "torch vs jax per_layer, T=256")


@pytest.mark.parametrize(("fw", "norm_rule"), [
    ("torch", None), ("torch", "gram"), ("torch", "materialize"),
    pytest.param("jax", None, marks=pytest.mark.slow),  # jax-privacy's step compiles: ~12 s
    ("jax", "gram"), ("jax", "materialize"),
])
def test_every_dp_strategy(fw: str, norm_rule, monkeypatch):
    """materialize / ghost / bk (and, with the cost model's rule, the peers: Opacus ghost clipping and hooks +
    DPOptimizer with DPLSTM; jax-privacy) = the numpy reference from the loop, half the examples clipped."""
    spec, nets, weights = small()
    with forced_routes(lstm=norm_rule):
        check_dp(fw, weights, nets[fw], ("materialize", "ghost", "bk"), peer=norm_rule is None,
                 batch=make_batch(4, seed=3, dtype="float64", model=spec))


def test_dp_step_torch_equals_jax(case):
    spec, nets, weights = case
    x, y = make_batch(4, seed=3, dtype="float64", model=spec)
    for clipping in ("ghost", "bk"):
        steps = {fw: dp_update(fw, weights, x, y, nets[fw], clipping=clipping, clip=0.05, nm=0.0, noise=None)
                 for fw in FRAMEWORKS}
        assert_close(steps["jax"], steps["torch"], f"{clipping} torch vs jax")
    steps = {fw: dp_update(fw, weights, x, y, nets[fw], clipping="bk", clip=math.inf, nm=0.0, noise=None)
             for fw in FRAMEWORKS}
    assert_close(steps["jax"], steps["torch"], "bk clip=inf torch vs jax")


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_ghost_norms_gram_and_materialise_agree(fw: str, monkeypatch):
    """The LSTM's Gram norm (forced) and its materialised norm give the same per-example norms (the loop's)."""
    spec, nets, weights = small()
    x, y = make_batch(4, seed=4, dtype="float64", model=spec)
    grads = per_sample(fw, weights, x, y, "loop", nets[fw], "seed")
    ref = np.sqrt(sum((g.reshape(4, -1) ** 2).sum(1) for g in grads.values()))
    dp, ghost = impl_module(fw, "dp"), impl_module(fw, "ghost")
    for rule in ("gram", "materialize"):
        net = small()[1][fw]
        params = impl_module(fw, "weights").to_native(weights, "float64", "cpu", model=net)
        xn, yn = dp.native_batch(x, y, dtype="float64", device="cpu", model=net)
        with forced_routes(lstm=rule):
            norms = np.asarray(ghost.ghost_norms(params, xn, yn, loss="seed", model=net))
        np.testing.assert_allclose(norms, ref, rtol=1e-10)
