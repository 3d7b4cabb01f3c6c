"""The peer registry (contract.peers): one marker per method, clear errors on a bad entry, and a peer registered
from outside the sides (plain SGD on ``logreg``) reaching a tiny run's records, the suite tables, the figures'
markers and the versions every meta records."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from compare.benchmark import sweep
from compare.benchmark.cli import parse_args
from compare.benchmark.point import measure_point
from compare.benchmark.suite import markdown_tables, suite_rows
from compare.benchmark.sweep import plan_points, run_sweep
from compare.benchmark.targets import TARGETS
from compare.frameworks import FRAMEWORKS, side
from compare.lock import versioned
from contract import peers as registry
from contract.peers import METHOD_MARKERS, Peer, markers, peer, peers, register, unregister


def _key(marker: object) -> object:
    return marker.lower() if isinstance(marker, str) else marker


def test_every_method_and_peer_has_its_own_marker():
    """No two methods share a marker, case aside ("d" / "D" and "h" / "H" look alike in a figure)."""
    known = markers()
    assert len({_key(m) for m in known.values()}) == len(known), known
    for fw in FRAMEWORKS:
        for kind in ("reference", "per_sample", "dp"):
            missing = set(TARGETS[kind].methods(fw)) - set(known)
            assert not missing, f"{fw} {kind}: no marker for {sorted(missing)}"
        assert not (set(side(fw).CUDA_METHODS) | set(side(fw).MISSING)) - set(known)


def test_each_framework_has_its_dp_peers_with_a_library_package_and_factory():
    assert [p.name for p in peers("torch", "dp")] == ["opacus_sgd", "opacus_ghost"]
    assert [p.name for p in peers("jax", "dp")] == ["jax_privacy"]
    assert registry.packages() == ("opacus", "jax-privacy")
    assert {"opacus", "jax-privacy"} <= set(versioned())


@pytest.mark.parametrize("change, message", [
    ({"name": "opacus_sgd"}, "already a method or a registered peer"),
    ({"name": "dp_bk"}, "already a method or a registered peer"),
    ({"name": "Bad-Name"}, "lower-case"),
    ({"framework": "tf"}, "framework 'tf'"),
    ({"kind": "grads"}, "kind 'grads'"),
    ({"marker": "d"}, "marker 'd' is sgd's"),
    ({"marker": (4, 1, 0)}, "opacus_ghost's"),
    ({"module": "", "factory": ""}, "needs a module and factory"),
    ({"kwargs": ("absent",)}, "kwargs ['absent']"),
])
def test_a_bad_entry_is_one_clear_error_and_changes_nothing(change, message):
    before = peers()
    good = Peer("fresh", "torch", "dp", "Fresh", "Fresh", (7, 1, 0), "fresh", "m", "f")
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        register(replace(good, **change))
    assert peers() == before


def make_plain_sgd_step(*, lr: float, clip: float, noise_multiplier: float, loss: str, model: str, dtype: str,
                        momentum: float = 1.0):
    """A stand-in peer: torch's non-private step, taking (and ignoring) the private step's arguments."""
    assert momentum == 0.0  # the registered settings are passed
    sgd = side("torch").make_sgd_step(lr=lr, loss=loss, model=model, dtype=dtype)
    return lambda params, x, y, noise=None: sgd(params, x, y)


@pytest.fixture
def dummy_peer():
    entry = register(Peer("plain_sgd", "torch", "dp", "Plain", "plain SGD", (7, 1, 0), "plain-sgd-peer",
                          factory=make_plain_sgd_step, settings={"momentum": 0.0}, kwargs=("momentum",)))
    yield entry
    unregister(entry.name)


def test_a_registered_peer_reaches_records_tables_markers_and_versions(dummy_peer, tmp_path, monkeypatch):
    """B = 2, one timed call per point, measured in this process (no subprocess: the entry lives here)."""
    from compare.weights import init_weights, save_weights

    monkeypatch.setattr(sweep, "run_floor", lambda **_: None)
    w = save_weights(tmp_path / "w.safetensors", init_weights(0, "logreg"), model="logreg")
    cfg = parse_args(["--model", "logreg", "--frameworks", "torch", "--batch-sizes", "2", "--methods", "plain_sgd",
                      "--repeats", "1", "--min-seconds", "0", "--out", str(tmp_path)])
    plan = plan_points(cfg, {"logreg": w}, "cpu")
    assert [(s.kind, s.method) for s in plan] == [("reference", "batched"), ("dp", "sgd"), ("dp", "plain_sgd")]
    run_sweep(cfg, plan, env={}, device="cpu", agreement=None, argv=[], config={},
              runner=lambda spec, env, timeout: measure_point(spec))
    data = json.loads((tmp_path / "results.json").read_text())
    rec = next(r for r in data["timings"] if r["method"] == "plain_sgd")
    assert rec["status"] == "ok" and rec["median_ms"] > 0 and rec["model"] == "logreg", rec
    assert rec["peer_settings"] == {"momentum": 0.0} and rec["clipping"] == "plain_sgd"
    assert "plain-sgd-peer" in data["meta"]["versions"]

    rows = suite_rows(data["timings"])
    assert rows[0]["torch"]["peer_best"]["method"] == "plain_sgd"
    table = markdown_tables(rows)
    assert "Opacus / Plain best (x sgd)" in table
    ms = rows[0]["torch"]["peer_best"]["ms"]
    assert f"| {ms:.3g} (" in table or f"| {ms:.0f} (" in table
    assert markers()["plain_sgd"] == (7, 1, 0) and peer("plain_sgd") is dummy_peer


def test_unregistered_peer_is_gone_from_the_benchmark():
    assert "plain_sgd" not in TARGETS["dp"].methods("torch")
    assert set(METHOD_MARKERS) <= set(markers())
