"""Each side's probes of the per-layer engine (``layer_cotangents``, ``layer_routes``, ``layer_stages``), what the
experiments under scripts/ read: mirrored answers, and every norm form of a layer equal to its materialised norm;
and a registered network built at other sizes (``network_sizes``, ``variant``). Small: mnist_cnn (conv, linear),
embed (embedding) and a small transformer (the packed projection) at B = 3, float64."""
from __future__ import annotations

import numpy as np
import pytest

from compare.frameworks import FRAMEWORKS, side
from compare.spec import make_batch
from compare.weights import init_weights


def _inputs(fw: str, model: str):
    x, y = make_batch(3, seed=2, model=model)
    return side(fw).native_inputs(init_weights(0, model), x, y, dtype="float64", device="cpu", model=model)


@pytest.mark.parametrize("model", ["mnist_cnn", "embed"])
def test_routes_are_mirrored(model: str):
    got = {fw: side(fw).layer_routes(*_inputs(fw, model), "nll_log_softmax", model) for fw in FRAMEWORKS}
    keys = ("layer", "kind", "sites", "norm_rule")
    assert [{k: r[k] for k in keys} for r in got["torch"]] == [{k: r[k] for k in keys} for r in got["jax"]]
    kinds = {r["layer"]: r["kind"] for r in got["torch"]}
    assert kinds == ({"conv1": "conv", "conv2": "conv", "fc1": "linear", "fc2": "linear"} if model == "mnist_cnn"
                     else {"embedding": "embedding", "fc": "linear"})
    assert all(r["a_shape"][0] == 3 and r["g_shape"][0] == 3 for r in got["jax"])


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("model, layer", [("mnist_cnn", "conv2"), ("mnist_cnn", "fc1"), ("embed", "embedding")])
def test_every_norm_form_is_the_materialised_norm(fw: str, model: str, layer: str):
    params, x, y = _inputs(fw, model)
    stages, sync = side(fw).layer_stages(params, x, y, "nll_log_softmax", model, layer)
    assert {"grads: rule", "norm: materialize", "norm: rule"} <= set(stages)
    assert "norm: gram" in stages and ("norm: sort" in stages) == (layer == "embedding")
    want = np.asarray(sync(stages["norm: materialize"]()))
    assert want.shape == (3,) and (want > 0).all()
    for name in ("norm: gram", "norm: sort", "norm: fallback", "norm: rule"):
        if name in stages:
            np.testing.assert_allclose(np.asarray(sync(stages[name]())), want, rtol=1e-10, err_msg=name)
    fallback = {k: np.asarray(v) for k, v in sync(stages["grads: fallback"]()).items()}
    rule = {k: np.asarray(v) for k, v in sync(stages["grads: rule"]()).items()}
    assert set(fallback) == set(rule)
    for k in rule:
        np.testing.assert_allclose(rule[k], fallback[k], rtol=1e-10, atol=1e-14, err_msg=k)
    inputs, cots = side(fw).layer_cotangents(params, x, y, "nll_log_softmax", model)
    assert set(inputs) == set(cots) and layer in inputs


SMALL = {"seq_len": 8, "width": 8, "heads": 2, "ff": 12, "num_layers": 1}


def test_a_variant_has_its_own_sizes_on_both_sides():
    got = {fw: side(fw).init_weights(0, "transformer", **SMALL) for fw in FRAMEWORKS}
    shapes = {fw: {k: v.shape for k, v in w.items()} for fw, w in got.items()}
    assert shapes["torch"] == shapes["jax"]
    assert shapes["torch"]["pos_embedding.weight"] == (8, 8)
    assert side("torch").network_sizes("transformer") == side("jax").network_sizes("transformer")
    assert side("torch").network_sizes("mnist_cnn") == {}
    with pytest.raises(ValueError, match="no size"):
        side("jax").init_weights(0, "mnist_cnn", width=3)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_the_fallback_of_a_layer_with_a_projection_child_is_its_norm(fw: str):
    """The attention applies its packed in-projection through a child: its site's (a, g) are the child's, its
    fallback runs on the module's own input and output cotangent; both give the same norms."""
    from compare.spec import Workload

    weights = side("torch").init_weights(0, "transformer", **SMALL)
    spec = Workload("transformer_T8", (8,), 2, {k: v.shape for k, v in weights.items()}, vocab_size=10004)
    net = side(fw).variant(spec, "transformer", **SMALL)
    x, y = make_batch(3, seed=2, model=spec)
    params, xn, yn = side(fw).native_inputs(weights, x, y, dtype="float64", device="cpu", model=net)
    stages, sync = side(fw).layer_stages(params, xn, yn, "nll_log_softmax", net, "encoder.layers.0.self_attn")
    want = np.asarray(sync(stages["norm: materialize"]()))
    assert (want > 0).all()
    np.testing.assert_allclose(np.asarray(sync(stages["norm: fallback"]())), want, rtol=1e-10)
    np.testing.assert_allclose(np.asarray(sync(stages["norm: gram"]())), want, rtol=1e-10)
