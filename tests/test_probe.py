"""Each side's probes of the per-layer engine (``layer_cotangents``, ``layer_routes``, ``layer_stages``), what the
experiments under scripts/ read: mirrored answers, and every norm form of a layer equal to its materialised norm.
Small: mnist_cnn (conv, linear) and embed (embedding) at B = 3, float64."""
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
    assert ("norm: gram" in stages) == (layer != "embedding")
    want = np.asarray(sync(stages["norm: materialize"]()))
    assert want.shape == (3,) and (want > 0).all()
    for name in ("norm: gram", "norm: rule"):
        if name in stages:
            np.testing.assert_allclose(np.asarray(sync(stages[name]())), want, rtol=1e-10, err_msg=name)
    fallback = {k: np.asarray(v) for k, v in sync(stages["grads: fallback"]()).items()}
    rule = {k: np.asarray(v) for k, v in sync(stages["grads: rule"]()).items()}
    assert set(fallback) == set(rule)
    for k in rule:
        np.testing.assert_allclose(rule[k], fallback[k], rtol=1e-10, atol=1e-14, err_msg=k)
    inputs, cots = side(fw).layer_cotangents(params, x, y, "nll_log_softmax", model)
    assert set(inputs) == set(cots) and layer in inputs
