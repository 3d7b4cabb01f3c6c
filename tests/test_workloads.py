"""The registered workloads: registry, parameter counts, inputs, and every method x DP strategy on every workload in
both frameworks (float64: = that framework's loop, torch = JAX), at small B.

The per-method checks live in ``workload_checks`` (shared with the genericity test, tests/test_generic.py).
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import pytest

from compare.frameworks import FRAMEWORKS, impl_module
from compare.spec import MODELS, InputError, check_batch, make_batch, parse_models
from compare.weights import WeightsError, init_weights, load_weights, save_weights, validate_weights
from contract.cost_model import embedding_route, forced_routes
from workload_checks import assert_close, check_dp, check_methods, per_sample

# Each workload's parameter count (exact).
PARAM_COUNTS = {"seed_cnn": 1_199_882, "logreg": 210, "ffnn": 5_352, "mnist_cnn": 26_010, "cifar10_cnn": 605_226,
                "embed": 160_098, "lstm": 1_081_402, "transformer": 4_174_338, "wrn16_4": 2_748_890}
NEW = tuple(m for m in MODELS if m != "seed_cnn")  # seed_cnn has its own, larger suite
# Every method x strategy x peer of wrn16_4 took ~16 min on a shared 2-core CPU (torch.compile most of it): slow;
# the default suite checks its rules (test_wrn16_4_rules_equal_the_loop).
SLOW = ("wrn16_4",)
NEW_MARKED = [pytest.param(m, marks=pytest.mark.slow) if m in SLOW else m for m in NEW]


@lru_cache(maxsize=None)
def weights(model: str) -> dict[str, np.ndarray]:
    return init_weights(0, model)


def test_registry_has_the_exact_parameter_counts():
    assert tuple(MODELS) == tuple(PARAM_COUNTS)
    assert {m: w.num_params for m, w in MODELS.items()} == PARAM_COUNTS


@pytest.mark.parametrize("model", MODELS)
def test_both_modules_have_the_canonical_parameters(model: str):
    """torch's state_dict and JAX's native State (through the per-kind layout rule) match the spec's shapes."""
    import torch

    from jax_impl.weights import layout, to_canonical, to_native
    from torch_impl.model import make_model

    spec = MODELS[model]
    torch.manual_seed(0)
    assert {k: tuple(v.shape) for k, v in make_model(model).state_dict().items()} == spec.param_shapes
    w = weights(model)
    assert list(w) == list(spec.param_shapes) and all(v.dtype == np.float32 for v in w.values())
    assert list(layout(model)) == list(spec.param_shapes)
    back = to_canonical(to_native(w, "float32", "cpu", model=model), model=model)
    assert all(np.array_equal(back[k], w[k]) for k in w)


def test_seed_cnn_stays_the_default_and_bit_identical():
    a, b = init_weights(0), init_weights(0, "seed_cnn")
    assert list(a) == list(b) and all(np.array_equal(a[k], b[k]) for k in a)
    x0, y0 = make_batch(4, seed=2)
    x1, y1 = make_batch(4, seed=2, model="seed_cnn")
    assert np.array_equal(x0, x1) and np.array_equal(y0, y1)


@pytest.mark.parametrize("model", MODELS)
def test_make_batch_is_seeded_and_valid(model: str):
    spec = MODELS[model]
    x, y = make_batch(5, seed=7, model=model)
    assert x.shape == (5, *spec.input_shape) and y.shape == (5,)
    assert x.dtype == (np.int64 if spec.tokens else np.float32)
    assert np.array_equal(x, make_batch(5, seed=7, model=model)[0])
    assert ((y >= 0) & (y < spec.num_classes)).all()
    check_batch(x, y, model)


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("model", NEW_MARKED)
def test_every_method_equals_the_loop(fw: str, model: str):
    if (fw, model) == ("torch", "lstm"):  # measured: 775 s, almost all torch.compile unrolling the 256 steps
        pytest.skip("torch lstm at T=256: compile unrolls 256 steps (13 min); tests/test_lstm.py checks every "
                    "method at T=6")
    check_methods(fw, weights(model), model)


@pytest.mark.parametrize("model", NEW_MARKED)
def test_torch_equals_jax_in_float64(model: str):
    x, y = make_batch(3, seed=1, dtype="float64", model=model)
    for loss in ("nll_log_softmax", "seed"):
        assert_close(per_sample("jax", weights(model), x, y, "loop", model, loss),
                     per_sample("torch", weights(model), x, y, "loop", model, loss), f"torch vs jax, {loss}")


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("model", NEW_MARKED)
def test_every_dp_strategy_and_peer(fw: str, model: str):
    check_dp(fw, weights(model), model, impl_module(fw, "dp").CLIPPINGS)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_wrn16_4_rules_equal_the_loop(fw: str):
    """WRN-16-4's GroupNorm, bias-free conv and shortcut layers by the per-layer rules: per_layer and the bk step
    (half the examples clipped) equal torch's float64 loop at B = 2 (torch = JAX: the slow tests)."""
    from workload_checks import dp_update, reference_update

    x, y = make_batch(2, seed=1, dtype="float64", model="wrn16_4")
    ref = per_sample("torch", weights("wrn16_4"), x, y, "loop", "wrn16_4")
    assert_close(per_sample(fw, weights("wrn16_4"), x, y, "per_layer", "wrn16_4"), ref, f"{fw} per_layer")
    norms = np.sqrt(sum((g.reshape(2, -1) ** 2).sum(1) for g in ref.values()))
    clip = float(norms.mean())
    got = dp_update(fw, weights("wrn16_4"), x, y, "wrn16_4", clipping="bk", clip=clip, nm=0.0, noise=None)
    assert_close(got, reference_update(ref, clip, 0.0, None), f"{fw} bk")


@pytest.mark.parametrize("model", NEW_MARKED)
def test_dp_step_torch_equals_jax(model: str):
    """The same bk step (clip = inf, no noise: plain SGD of the summed per-example gradients) on both sides."""
    from workload_checks import dp_update

    x, y = make_batch(4, seed=3, dtype="float64", model=model)
    steps = {fw: dp_update(fw, weights(model), x, y, model, clipping="bk", clip=math.inf, nm=0.0, noise=None)
             for fw in FRAMEWORKS}
    assert_close(steps["jax"], steps["torch"], "bk torch vs jax")


# ---- the cost model, the sparse embedding, inputs and errors ------------------------------------------------

@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_conv_norm_rule_per_layer_follows_the_cost_model(fw: str):
    """Seed CNN: both convs materialise (as measured, rules/conv.py); cifar10_cnn: the 8x8 and 4x4 layers go to
    Gram (P (d + C_out) < 2.5 d C_out, the measured slack: paper/cpu-costmodel/), the rest materialise; mnist_cnn:
    conv2 (5x5 outputs) Gram. Same choice on both sides."""
    import importlib

    per_layer, conv = impl_module(fw, "per_layer"), importlib.import_module(f"{fw}_impl.rules.conv")
    expected = {"seed_cnn": {"conv1": "materialize", "conv2": "materialize"},
                "mnist_cnn": {"conv1": "materialize", "conv2": "gram"},
                "cifar10_cnn": {f"conv{i}": "gram" if i >= 5 else "materialize" for i in range(1, 9)}}
    for model, rules in expected.items():
        x, y = make_batch(2, seed=0, model=model)
        params, xn, yn = impl_module(fw, "per_sample").native_inputs(weights(model), x, y, device="cpu", model=model)
        _, cots = per_layer.output_cotangents(params, xn, yn, "seed", model)
        modules = (dict(per_layer.param_layers(per_layer.resolve(model).module)) if fw == "torch"
                   else per_layer.layers(params, model))
        assert {name: conv.norm_rule(modules[name], cots[name]) for name in rules} == rules


@pytest.mark.parametrize("route", ["sort", "gram"])
@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_embedding_norms_and_sums_never_materialise(fw: str, route: str, monkeypatch):
    """ghost norms and bk sums of the embed workload run with per-example materialisation of the embedding
    forbidden (it would be a dense (B x 10004 x 16) tensor), by either norm form (``embedding_route``); a batch
    where half of each example's positions repeat a token and the rest are (almost all) seen once."""
    rules, ghost = impl_module(fw, "rules"), impl_module(fw, "ghost")
    honest = rules.per_example

    def guarded(layer, *args):
        assert rules.kind_of(layer) != "embedding", "the embedding's per-example gradient was materialised"
        return honest(layer, *args)

    x, y = make_batch(4, seed=3, dtype="float64", model="embed")
    x[:, 1:128:2] = x[:, :128:2]  # positions below 128 come in pairs of one token
    check_dp(fw, weights("embed"), "embed", ("materialize",), batch=(x, y), peer=False)  # unguarded reference
    monkeypatch.setattr(rules, "per_example", guarded)
    dp = impl_module(fw, "dp")
    params = impl_module(fw, "weights").to_native(weights("embed"), "float64", "cpu", model="embed")
    xn, yn = dp.native_batch(x, y, dtype="float64", device="cpu", model="embed")
    with forced_routes(embedding=route):
        norms = np.asarray(ghost.ghost_norms(params, xn, yn, loss="seed", model="embed"))
    grads = per_sample(fw, weights("embed"), x, y, "loop", "embed", "seed")
    ref = np.sqrt(sum((g.reshape(4, -1) ** 2).sum(1) for g in grads.values()))
    np.testing.assert_allclose(norms, ref, rtol=1e-10)
    sums, _ = ghost.bk_clipped_sum(params, xn, yn, clip=float(np.median(ref)), loss="seed", model="embed")
    f = np.minimum(1.0, float(np.median(ref)) / ref)
    assert_close(impl_module(fw, "weights").to_canonical(sums, model="embed"),
                 {k: np.tensordot(f, g, 1) for k, g in grads.items()}, "bk embed sums")


def test_embedding_route_follows_the_cost_model():
    """The equality Gram for short rows, the per-row sort for the workloads' (embed: T = 256, d = 16;
    transformer: T = 128, d = 256), as measured (paper/perf-embed/costmodel-*.json); a forced route wins, and a
    route the embedding does not have is one clear error."""
    assert [embedding_route(t, 16) for t in (4, 256)] == ["gram", "sort"]
    assert embedding_route(128, 256) == "sort"
    with forced_routes(embedding="gram"):
        assert embedding_route(256, 16) == "gram"
    with pytest.raises(ValueError, match=r"unknown norm route\(s\) \{'embedding': 'materialize'\}"):
        with forced_routes(embedding="materialize"):
            pass


def _set(x: np.ndarray, index: tuple[int, ...], value: int) -> np.ndarray:
    x = x.copy()
    x[index] = value
    return x


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize(("model", "mutate", "message"), [
    ("logreg", lambda x, y: (x[:, :100], y), r"x must have shape \(B, 104\) for model 'logreg', got \(3, 100\)"),
    ("ffnn", lambda x, y: (x, y + 2), r"labels out of range 0\.\.1"),
    ("embed", lambda x, y: (_set(x, (1, 3), 10004), y), r"token ids out of range 0\.\.10003 in samples \[1\]"),
    ("embed", lambda x, y: (x.astype(np.float32), y), r"x must be integer token ids for model 'embed'"),
    ("cifar10_cnn", lambda x, y: (x[:, :1], y), r"x must have shape \(B, 3, 32, 32\) \(NCHW\) for model 'cifar10_cnn'"),
])
def test_bad_inputs_name_the_problem(fw: str, model: str, mutate, message: str):
    x, y = mutate(*make_batch(3, seed=0, model=model))
    with pytest.raises(InputError, match=message):
        per_sample(fw, weights(model), x, y, "vmap", model)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_unknown_model_is_one_clear_error(fw: str):
    ps = impl_module(fw, "per_sample")
    with pytest.raises(InputError, match=r"unknown model 'resnet'; expected one of \('seed_cnn', 'logreg'"):
        ps.native_fn("vmap", model="resnet")
    with pytest.raises(InputError, match="unknown model 'resnet'"):
        parse_models("logreg,resnet")
    assert parse_models("all") == tuple(MODELS) and parse_models("ffnn, embed") == ("ffnn", "embed")


def test_weights_of_another_workload_are_one_clear_error(tmp_path):
    """A logreg file loaded as seed_cnn (or validated as ffnn) names both workloads, by metadata or by shapes."""
    path = save_weights(tmp_path / "logreg.safetensors", weights("logreg"), model="logreg")
    assert all(np.array_equal(v, weights("logreg")[k]) for k, v in load_weights(path, model="logreg").items())
    with pytest.raises(WeightsError, match=r"weights of model 'logreg', not of model 'seed_cnn'"):
        load_weights(path)
    with pytest.raises(WeightsError, match=r"weights of model 'mnist_cnn', not of model 'ffnn'"):
        validate_weights(weights("mnist_cnn"), model="ffnn")
    with pytest.raises(WeightsError, match=r"weights of model 'embed', not of model 'logreg'"):
        impl_module("jax", "weights").to_native(weights("embed"), "float32", "cpu", model="logreg")
