"""The agreement check per workload: float64 against each framework's loop and torch against
JAX for every applicable method, the float32 explanation by decision replay wherever a workload has ReLU or
max-pool decisions, and mirrored decision sites found from the models themselves."""
from __future__ import annotations

import json

import numpy as np
import pytest

from compare.agreement import TOLERANCE, run_agreement, sites
from compare.spec import MODELS, InputError, make_batch
from compare.weights import init_weights
from jax_impl import decisions as jd
from torch_impl import decisions as td
from torch_impl.per_sample import per_sample_grads as torch_grads

# torch.compile takes 20-30 s per workload on a CPU: the fast tests run every other method, the slow one all.
FAST_METHODS = ("vmap", "vmap_nojit", "per_layer", "vmap_patches", "opacus_hooks", "opacus_ew", "opacus_functorch")
SITES = {
    "seed_cnn": ["conv1.relu", "conv2.relu", "pool.winner", "fc1.relu"],
    "logreg": [],
    "ffnn": ["fc1.relu"],
    "mnist_cnn": ["conv1.relu", "pool1.winner", "conv2.relu", "pool2.winner", "fc1.relu"],
    "cifar10_cnn": [f"conv{i}.relu" for i in range(1, 8)],
    "embed": [],
    "lstm": [],  # sigmoid / tanh only: no decisions
    "transformer": [],  # GELU and softmax are smooth: no decision to record
    "wrn16_4": [f"layer{k}.{i}.gn{j}.relu" for k in (1, 2, 3) for i in (0, 1) for j in (1, 2)] + ["gn.relu"],
}


# wrn16_4's decision checks (replay: 13 sites, one float64 backward per example) took ~2 min on a shared 2-core CPU
@pytest.fixture(scope="module", params=[pytest.param(m, marks=pytest.mark.slow) if m == "wrn16_4" else m
                                        for m in MODELS])
def workload(request):
    m = request.param
    x, y = make_batch(3, seed=1, model=m)
    return m, init_weights(0, model=m), x, y


def test_sites_are_found_from_the_models_and_mirrored():
    assert set(SITES) == set(MODELS)
    for m, keys in SITES.items():
        assert [s.key for s in td.decision_sites(m)] == keys, m
        assert jd.decision_sites(m) == td.decision_sites(m), m
    pool1 = td.decision_sites("mnist_cnn")[1]
    assert (pool1.kernel, pool1.stride, pool1.source, pool1.shape) == ((2, 2), (1, 1), "conv1.relu", (16, 13, 13))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_decisions_agree_between_frameworks(workload, dtype):
    """float64: identical decisions; float32 too on this batch (no near-tie). Winners equal the first max of
    each window (also for mnist_cnn's overlapping 2x2/1 pools, where torch's are read from max_pool2d's indices)."""
    m, w, x, _ = workload
    t, j = td.forward_decisions(w, x, dtype=dtype, model=m), jd.forward_decisions(w, x, dtype=dtype, model=m)
    assert set(t) == set(j)
    for s in td.decision_sites(m):
        np.testing.assert_array_equal(t[s.key], j[s.key], err_msg=f"{m} {s.key}")
        if s.kind == "max_pool":
            src = next(r for r in td.decision_sites(m) if r.key == s.source)
            values = t[f"{src.base}.pre"] * t[src.key]
            np.testing.assert_array_equal(t[s.key], sites.argmax_winners(values, s), err_msg=s.key)


def test_replay_with_float64_decisions_is_the_float64_gradient(workload):
    m, w, x, y = workload
    d = td.forward_decisions(w, x, dtype="float64", model=m)
    forced = {s.key: d[s.key] for s in td.decision_sites(m)}
    loop = torch_grads(w, x, y, method="loop", dtype="float64", model=m)
    for replay in (td.replay_grads(w, x, y, forced, model=m), jd.replay_grads(w, x, y, forced, model=m)):
        for k in loop:
            np.testing.assert_allclose(replay[k], loop[k], rtol=0, atol=1e-12 * np.abs(loop[k]).max(), err_msg=k)


def test_replay_follows_a_forced_max_pool_winner():
    """Moving one mnist_cnn pool1 winner changes the conv1 gradient, and both frameworks' replays agree."""
    m = "mnist_cnn"
    w, (x, y) = init_weights(0, model=m), make_batch(1, seed=1, model=m)
    d = td.forward_decisions(w, x, dtype="float64", model=m)
    forced = {s.key: d[s.key].copy() for s in td.decision_sites(m)}
    c, i, j = np.argwhere(forced["conv1.relu"][0, :, :13, :13])[0]  # an open gate: make its window pick another
    forced["pool1.winner"][0, c, i, j] = (forced["pool1.winner"][0, c, i, j] + 1) % 4
    t, jx = td.replay_grads(w, x, y, forced, model=m), jd.replay_grads(w, x, y, forced, model=m)
    plain = torch_grads(w, x, y, method="loop", dtype="float64", model=m)
    assert not np.allclose(t["conv1.weight"], plain["conv1.weight"], rtol=0, atol=1e-8)
    for k in t:
        np.testing.assert_allclose(jx[k], t[k], rtol=0, atol=1e-12 * np.abs(t[k]).max(), err_msg=k)


HEAVY = ("seed_cnn", "mnist_cnn", "cifar10_cnn", "lstm", "transformer", "wrn16_4")  # 11-23 s each on a shared
# 2-core CPU (lstm 13 s, transformer 53 s, wrn16_4 longer)


@pytest.mark.parametrize("m", [pytest.param(m, marks=pytest.mark.slow) if m in HEAVY else m for m in MODELS])
def test_run_agreement_per_workload(m):
    x, y = make_batch(3, seed=1, model=m)
    w = init_weights(0, model=m)
    report = run_agreement(w, x, y, model=m, methods=FAST_METHODS)
    assert report.ok, report.format_table()
    assert report.model == m and f"model {m}" in report.format_table()
    data = json.loads(json.dumps(report.to_json()))
    assert data["model"] == m and data["ok"] and data["decision_sites"] == SITES[m]
    assert set(data["results"]) == {"torch/float32", "torch/float64", "jax/float32", "jax/float64"}
    for fw in ("torch", "jax"):
        for meth, reason in __import__(f"{fw}_impl.per_sample", fromlist=["x"]).applicable_methods(m).items():
            if meth == "loop":
                continue
            ran = f"{fw}/float64/{meth}" in data["methods"]
            assert ran != (f"{fw}/{meth}" in data["not_applicable"]), (fw, meth)  # run or listed, never dropped
            if reason is not None:
                assert data["not_applicable"][f"{fw}/{meth}"] == reason
    assert "torch/float64/loop vs jax/float64/loop" in data["cross"]
    assert max(report.float64_max_rel_err().values()) <= TOLERANCE["float64"]
    for key, explanations in report.explanations.items():
        assert all(e.explained for e in explanations), (key, [e.describe() for e in explanations])


def test_unknown_model_is_one_input_error():
    x, y = make_batch(2, seed=0)
    with pytest.raises(InputError, match="unknown model 'nope'"):
        run_agreement(init_weights(0), x, y, model="nope")


def test_corrupted_float32_without_decisions_is_not_explained(monkeypatch):
    """logreg has no decision to blame: a float32 error beyond tolerance stays unexplained."""
    import torch_impl.per_sample as tps

    honest = tps.per_sample_grads

    def corrupted(*args, **kw):
        grads = honest(*args, **kw)
        if kw.get("dtype") == "float32":
            grads["fc.weight"][1] += 1e-2
        return grads

    monkeypatch.setattr(tps, "per_sample_grads", corrupted)
    x, y = make_batch(3, seed=0, model="logreg")
    report = run_agreement(init_weights(0, model="logreg"), x, y, model="logreg", frameworks=("torch",),
                           methods=("vmap",))
    assert report.unexplained() == {"torch/float32": [1]}
    assert "rounding only" in report.format_table()


@pytest.mark.slow
@pytest.mark.parametrize("model", ["ffnn", "mnist_cnn"])
def test_run_agreement_every_method(model):
    """Every applicable method, torch.compile included (20-30 s per workload on a CPU)."""
    x, y = make_batch(2, seed=1, model=model)
    report = run_agreement(init_weights(0, model=model), x, y, model=model)
    assert report.ok, report.format_table()
    assert "torch/float64/compile" in report.methods


def test_methods_not_run_by_default_are_listed_with_the_reason(monkeypatch):
    """The default method list leaves out each side's ``not_run_by_default`` (torch.compile on the 256-step lstm:
    13 min) and says why in ``not_applicable``; naming the method in ``methods=`` runs it. Checked on logreg
    (fast), with the torch side's answer patched; the real answer is checked for the lstm (and none for JAX)."""
    from compare.frameworks import impl_module, side

    assert "256-step recurrence" in side("torch").not_run_by_default("lstm")["compile"]
    assert side("torch").not_run_by_default("transformer") == {} and side("jax").not_run_by_default("lstm") == {}
    monkeypatch.setattr(impl_module("torch", "per_sample"), "not_run_by_default",
                        lambda model: {"vmap": "not run by default: a test's reason"})
    x, y = make_batch(3, seed=1, model="logreg")
    w = init_weights(0, model="logreg")
    report = run_agreement(w, x, y, frameworks=("torch",), model="logreg", method="per_layer")
    assert report.not_applicable["torch/vmap"] == "not run by default: a test's reason"
    assert "torch/float64/vmap" not in report.methods and "torch/float64/per_layer" in report.methods
    named = run_agreement(w, x, y, frameworks=("torch",), model="logreg", method="per_layer",
                          methods=("vmap",))
    assert "torch/float64/vmap" in named.methods and named.ok
