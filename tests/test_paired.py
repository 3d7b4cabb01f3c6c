"""Paired interleaved ratios (compare.benchmark.paired, compare.benchmark.pair): the bootstrap interval, the
verdicts, the interleaving and what the records keep. Synthetic round series; nothing here asserts a time."""
from __future__ import annotations

import numpy as np
import pytest

from compare.benchmark.pair import attach, pair_groups
from compare.benchmark.paired import (
    GOALS, Ratio, calls_per_slot, interleave, paired_ratio, verdict, warnings_for,
)
from compare.benchmark.point import PointSpec
from compare.benchmark.summary import format_summary, ratio_verdicts, warning_line


def _load_burst(n: int = 40, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Two identical targets (10 ms) with per-round noise; from round n/2 a background load slows both 2x."""
    rng = np.random.default_rng(seed)
    slow = np.where(np.arange(n) < n // 2, 1.0, 2.0)
    return 10 * slow * rng.normal(1, 0.02, n), 10 * slow * rng.normal(1, 0.02, n)


def test_paired_ratio_of_identical_targets_under_a_load_burst_contains_one_and_is_narrow():
    a, b = _load_burst()
    r = paired_ratio(a, b)
    assert r.lo <= 1.0 <= r.hi and r.hi - r.lo < 0.05 and r.rounds == 40
    # the unpaired protocol: a measured before the burst, b during it, medians divided
    unpaired = np.median(a[:20]) / np.median(b[20:])
    assert abs(unpaired - 0.5) < 0.05


def test_paired_ratio_is_deterministic_with_its_seed_and_takes_a_constant_denominator_offset():
    a, b = _load_burst()
    assert paired_ratio(a, b, seed=3) == paired_ratio(a, b, seed=3)
    r = paired_ratio(np.full(5, 12.0), np.full(5, 8.0), den_offset_ms=2.0)
    assert (r.median, r.lo, r.hi) == (1.2, 1.2, 1.2)


def test_paired_ratio_rejects_unaligned_series():
    with pytest.raises(ValueError, match="equally long"):
        paired_ratio([1.0, 2.0], [1.0])


@pytest.mark.parametrize("lo, hi, direction, expected", [
    (1.10, 1.20, "at_most", "met"), (1.20, 1.30, "at_most", "undecided"), (1.30, 1.40, "at_most", "missed"),
    (1.10, 1.20, "above", "met"), (0.90, 1.10, "above", "undecided"), (0.80, 0.95, "above", "missed"),
])
def test_verdict_reads_the_whole_interval(lo, hi, direction, expected):
    bound = 1.25 if direction == "at_most" else 1.0
    assert verdict(Ratio((lo + hi) / 2, lo, hi, 10), bound, direction) == expected


def test_warnings_for_wide_intervals_and_a_busy_machine():
    narrow, wide = Ratio(1.0, 0.95, 1.05, 10), Ratio(1.0, 0.8, 1.3, 10)
    assert warnings_for({"sgd": narrow}, 1.0, 2) == []
    w = warnings_for({"sgd": wide}, 3.5, 2)
    assert len(w) == 2 and "wider than +-10%" in w[0] and "load average 3.5 exceeded the 2 cores" in w[1]


def test_interleave_times_every_target_once_per_round_in_shuffled_orders():
    calls: list[str] = []
    targets = {n: (lambda n=n: calls.append(n)) for n in ("a", "b", "c")}
    res = interleave(targets, {"a": 1, "b": 2, "c": 1}, rounds=12, min_seconds=0.0, seed=0)
    assert len(res.orders) == 12 and all(sorted(o) == ["a", "b", "c"] for o in res.orders)
    assert len({tuple(o) for o in res.orders}) > 1  # shuffled, not a fixed order
    assert all(len(v) == 12 for v in res.rounds_ms.values()) and calls.count("b") == 24
    assert res.orders == interleave(targets, {"a": 1, "b": 2, "c": 1}, rounds=12, min_seconds=0.0, seed=0).orders


def test_calls_per_slot_fills_a_slot_and_never_drops_below_one():
    assert calls_per_slot(0.5, 20.0) == 40 and calls_per_slot(100.0, 20.0) == 1


def _spec(kind: str, method: str, fw: str = "jax") -> PointSpec:
    return PointSpec(framework=fw, kind=kind, method=method, batch_size=8, dtype="float32", device="cpu",
                     loss="nll_log_softmax", weights="w", model="logreg")


def test_pair_groups_put_a_method_with_its_baselines():
    specs = [_spec("reference", "batched"), _spec("per_sample", "vmap"), _spec("dp", "sgd"), _spec("dp", "dp_bk"),
             _spec("dp", "jax_privacy"), _spec("dp", "dp_sgd", fw="torch")]  # torch's dp_sgd lacks its sgd
    groups = pair_groups(specs)
    assert [[s.method for s in g] for g in groups] == [["batched", "vmap"], ["sgd", "dp_bk", "jax_privacy"]]


def _records(methods: list[str]) -> dict[str, dict]:
    return {m: {"framework": "jax", "kind": "dp", "method": m, "batch_size": 8, "model": "logreg",
                "median_ms": 99.0, "status": "ok", "reason": "", "iqr_ms": 0.0} for m in methods}


def test_attach_keeps_every_round_and_reads_each_ratio_against_its_goal():
    rounds = {"sgd": [10.0, 10.2, 9.9, 10.1], "dp_bk": [11.0, 11.1, 10.9, 11.2], "jax_privacy": [30.0] * 4}
    result = {"members": {m: {"rounds_ms": v, "calls_per_round": 1} for m, v in rounds.items()},
              "loadavg_max": 0.5, "cores": 2, "wall_s": 1.0}
    recs = _records(list(rounds))
    attach(recs, result, group_id="g")
    assert all(recs[m]["rounds_ms"] == rounds[m] for m in rounds)  # every round's time kept
    assert recs["dp_bk"]["unpaired_median_ms"] == 99.0 and recs["dp_bk"]["median_ms"] == pytest.approx(11.05)
    bk = recs["dp_bk"]["ratios"]["sgd"]
    assert bk["verdict"] == "met" and bk["bound"] == GOALS["private_over_sgd"][0] and len(bk["ci95"]) == 2
    peer = recs["jax_privacy"]["ratios"]
    assert "verdict" not in peer["sgd"] and peer["dp_bk"]["verdict"] == "met"  # peer / ours > 1
    assert recs["sgd"]["ratios"] == {} and recs["dp_bk"]["pair"]["members"] == ["dp_bk", "jax_privacy", "sgd"]
    verdicts = ratio_verdicts(list(recs.values()))
    assert {(v["method"], v["baseline"], v["verdict"]) for v in verdicts} == {("dp_bk", "sgd", "met"),
                                                                              ("jax_privacy", "dp_bk", "met")}


def test_attach_derives_the_floor_ratio_and_records_a_failed_member():
    rounds = {"batched": [4.0, 4.0, 4.0], "vmap": [6.0, 6.0, 6.0]}
    result = {"members": {**{m: {"rounds_ms": v, "calls_per_round": 1} for m, v in rounds.items()},
                          "loop": {"error": "RuntimeError: boom"}}, "loadavg_max": 4.0, "cores": 2}
    recs = _records(["batched", "vmap", "loop"])
    for r in recs.values():
        r["kind"] = "per_sample"
    attach(recs, result, group_id="g", floor_write_ms=1.0)
    assert recs["vmap"]["ratios"]["batched"]["median"] == 1.5 and recs["vmap"]["ratio_to_floor"] == 1.2
    assert "not timed" in recs["vmap"]["ratios"]["floor"]["derived"]
    assert recs["loop"]["warnings"] == ["not paired: {'loop': 'RuntimeError: boom'}"]
    assert any("load average 4.0" in w for w in recs["vmap"]["warnings"])


def test_summary_prints_paired_ratios_with_verdicts_and_one_warning_line():
    rounds = {"sgd": [10.0, 12.0, 9.0, 15.0, 10.0], "dp_bk": [14.0, 11.0, 13.0, 10.0, 16.0]}
    result = {"members": {m: {"rounds_ms": v, "calls_per_round": 1} for m, v in rounds.items()},
              "loadavg_max": 0.1, "cores": 2}
    recs = _records(list(rounds))
    attach(recs, result, group_id="g")
    timings = [{**r, "dtype": "float32", "device": "cpu", "min_ms": 1.0, "repeats": 5} for r in recs.values()]
    text = format_summary(timings, rounds=15)
    assert "DP overhead jax: dp_bk" in text and "undecided (goal <= 1.25)" in text
    assert text.count("WARNING") == 1 and "--rounds 30" in text
    assert warning_line([{"warnings": []}]) is None


def test_before_after_paired_mode_times_two_checkouts_in_one_process(tmp_path):
    """scripts/before_after.py --mode paired with this checkout on both sides: both builds import their own
    checkout's code, every round has both times, and the table is written from the JSON."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(root / "scripts" / "before_after.py"), str(root), str(root),
                          "--mode", "paired", "--models", "logreg", "--frameworks", "torch", "--batch-sizes", "4",
                          "--methods", "per_layer", "--rounds", "3", "--calls", "1", "--out", str(tmp_path),
                          "--file", "p.json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    row = json.loads((tmp_path / "p.json").read_text())["rows"][0]
    assert len(row["rounds"]) == 3 and all(r["old"] > 0 and r["new"] > 0 for r in row["rounds"])
    assert row["ratio_ci95"][0] <= row["ratio_median"] <= row["ratio_ci95"][1]
    assert "| `logreg` | torch | 4 | `per_layer` | 3 |" in (tmp_path / "p.md").read_text()
