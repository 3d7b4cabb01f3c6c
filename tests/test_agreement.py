"""The agreement checker: numpy oracle, mirrored decisions, decision replay, and explained vs unexplained errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from compare.agreement import seed_oracle as oracle
from compare.agreement import REPLAY_TOLERANCE, TOLERANCE, run_agreement
from compare.spec import PARAM_NAMES, make_batch
from jax_impl.decisions import forward_decisions as jax_decisions
from torch_impl.decisions import forward_decisions as torch_decisions
from torch_impl.per_sample import per_sample_grads as torch_grads

F64_RTOL = 1e-12  # float64 oracle vs torch: measured <= 1.7e-15 relative to each parameter's max |value|


def assert_grads_close(got: dict, ref: dict, rtol: float) -> None:
    for name in PARAM_NAMES:
        assert got[name].shape == ref[name].shape, name
        np.testing.assert_allclose(got[name], ref[name], rtol=0, atol=rtol * np.abs(ref[name]).max(), err_msg=name)


@pytest.fixture(scope="module")
def small_batch() -> tuple[np.ndarray, np.ndarray]:
    return make_batch(4, seed=7)


@pytest.mark.parametrize("loss", ["nll_log_softmax", "seed"])
def test_oracle_matches_torch_float64(weights, small_batch, loss):
    x, y = small_batch
    assert_grads_close(oracle.per_sample_grads(weights, x, y, loss=loss),
                       torch_grads(weights, x, y, method="vmap", loss=loss, dtype="float64"), F64_RTOL)


def test_decisions_agree_between_frameworks_in_float64(weights, small_batch):
    x, _ = small_batch
    t, j = torch_decisions(weights, x, dtype="float64"), jax_decisions(weights, x, dtype="float64")
    ref = oracle.forward(weights, x)
    for key in oracle.DECISION_SHAPES:
        np.testing.assert_array_equal(t[key], j[key], err_msg=key)
        np.testing.assert_array_equal(t[key], ref[key], err_msg=key)
    for key in oracle.PRE_SHAPES:
        scale = np.abs(ref[key]).max()
        np.testing.assert_allclose(t[key], ref[key], rtol=0, atol=1e-12 * scale, err_msg=key)
        np.testing.assert_allclose(j[key], ref[key], rtol=0, atol=1e-12 * scale, err_msg=key)
    windows = oracle.to_windows(np.maximum(ref["conv2.pre"], 0))
    assert (windows.max(axis=-1) == 0).any(), "no all-zero (tied) pool window: tie-breaking is untested"


def test_replay_with_float64_decisions_is_the_plain_oracle(weights, small_batch):
    x, y = small_batch
    forced = {k: v for k, v in torch_decisions(weights, x, dtype="float64").items() if k in oracle.DECISION_SHAPES}
    assert_grads_close(oracle.per_sample_grads(weights, x, y, forced=forced),
                       oracle.per_sample_grads(weights, x, y), 1e-15)


def test_replay_follows_a_forced_gate(weights, small_batch):
    """Closing one fc1 gate by force zeroes exactly that unit's fc1 gradients and changes the conv gradients."""
    x, y = small_batch
    forced = {k: v.copy() for k, v in torch_decisions(weights, x, dtype="float64").items()}
    unit = int(np.argmax(forced["fc1.relu"][0]))  # an open gate of sample 0
    forced["fc1.relu"][0, unit] = False
    plain, replay = oracle.per_sample_grads(weights, x, y), oracle.per_sample_grads(weights, x, y, forced=forced)
    assert np.all(replay["fc1.weight"][0, unit] == 0) and replay["fc1.bias"][0, unit] == 0
    assert np.any(plain["fc1.weight"][0, unit] != 0)
    assert not np.allclose(replay["conv2.weight"][0], plain["conv2.weight"][0], rtol=0, atol=1e-6)
    assert_grads_close({k: v[1:] for k, v in replay.items()}, {k: v[1:] for k, v in plain.items()}, 1e-15)


def test_bad_decisions_are_rejected():
    with pytest.raises(ValueError, match="pool.winner"):
        oracle.check_decisions({"conv1.relu": np.zeros((1, 32, 26, 26), bool)}, 1)


def _kinked_weights(weights: dict, x: np.ndarray) -> tuple[dict, list[tuple[int, int, int]]]:
    """Shift every conv2 bias so that, in sample 0, one pool winner per channel sits at 0 in float64,
    within float32 rounding (|z| <= half an ulp of the bias, while float32's conv2 error is several ulps).
    Returns the weights and the (channel, h, w) 12x12 windows whose winners were moved onto the kink."""
    cache = oracle.forward(weights, x[:1])
    pre = oracle.to_windows(cache["conv2.pre"])[0]  # (64, 12, 12, 4) raw pre-activations
    ordered = np.sort(pre, axis=-1)
    gap = np.where(ordered[..., -1] > 0, ordered[..., -1] - ordered[..., -2], -np.inf)  # winner vs runner-up
    kinked, spots = {k: v.copy() for k, v in weights.items()}, []
    for c in range(pre.shape[0]):
        h, w = np.unravel_index(np.argmax(gap[c]), gap[c].shape)
        kinked["conv2.bias"][c] = np.float32(weights["conv2.bias"][c] - ordered[c, h, w, -1])
        spots.append((c, int(h), int(w)))
    return kinked, spots


def test_constructed_kinks_are_explained(weights):
    x, y = make_batch(2, seed=3)
    kinked, spots = _kinked_weights(weights, x)
    report = run_agreement(kinked, x, y, methods=("vmap",))  # the other methods: test_agreement_workloads
    explanations = [e for key in ("torch/float32", "jax/float32") for e in report.explanations[key]]
    assert explanations, "no float32 sample left tolerance: the construction did not flip any kink"
    assert report.ok, report.format_table()
    data = json.loads(json.dumps(report.to_json()))
    assert set(data["results"]) == {"torch/float32", "torch/float64", "jax/float32", "jax/float64"}
    assert data["explanations"] and data["unexplained"] == {}
    assert all(v < REPLAY_TOLERANCE for v in report.smooth_max_rel_err.values()), report.smooth_max_rel_err
    for e in explanations:
        assert e.sample == 0 and e.explained and e.max_rel_err > TOLERANCE["float32"]
        kinks = {f.index for f in e.flips if f.decision == "pool.winner"}
        kinks |= {(c, h // 2, w // 2) for f in e.flips if f.decision == "conv2.relu" for c, h, w in [f.index]}
        assert kinks & set(spots), e.describe()
        assert all(f.margin < 8 for f in e.flips), e.describe()


def test_corrupted_result_is_not_explained(weights, small_batch, monkeypatch):
    import torch_impl.per_sample as tps

    honest = tps.per_sample_grads

    def corrupted(*args, **kw):
        grads = honest(*args, **kw)
        if kw.get("dtype") == "float32":
            grads["fc1.weight"][1] += 1e-2
        return grads

    monkeypatch.setattr(tps, "per_sample_grads", corrupted)
    x, y = small_batch
    report = run_agreement(weights, x, y, frameworks=("torch",), methods=("vmap",))
    assert not report.ok
    assert report.unexplained() == {"torch/float32": [1]}
    (e,) = report.explanations["torch/float32"]
    assert e.sample == 1 and not e.explained and e.params == ["fc1.weight"] and e.replay_rel_err > 1e-3
    assert "NOT OK" in report.format_table() and report.to_json()["ok"] is False
