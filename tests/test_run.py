"""compare.run: option parsing, the sweep (resume, failing points), the results schema, the exit status."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict
from pathlib import Path

import pytest

from compare.benchmark import cli as run, sweep
from compare.benchmark.point import PointSpec, run_point
from compare.benchmark.results import TIMING_FIELDS, failure_record, point_key
from compare.benchmark.cli import FULL_BATCH_SIZES, QUICK_BATCH_SIZES, parse_args
from compare.benchmark.sweep import plan_points, run_sweep

FAKE_FLOOR = {"bytes_per_s": 1e10, "best_kernel": "fake"}


def fake_pairs(specs: list[PointSpec], *, env: dict, timeout: float, rounds: int, min_seconds: float,
               seed: int) -> dict:
    """Stands in for the pair process: three equal rounds of 1 ms per member."""
    return {"members": {s.method: {"rounds_ms": [1.0, 1.0, 1.0], "calls_per_round": 1} for s in specs},
            "loadavg_max": 0.0, "cores": 2}


def test_defaults_are_the_quick_sweep_and_full_is_the_paper_sweep():
    quick, full = parse_args([]), parse_args(["--full"])
    assert quick.batch_sizes == QUICK_BATCH_SIZES and quick.methods is None and quick.out == Path("results")
    assert full.batch_sizes == FULL_BATCH_SIZES and full.repeats >= 5 and full.min_seconds >= 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        quick.repeats = 1


def test_options_parse_into_the_config(tmp_path):
    (tmp_path / "w.safetensors").write_bytes(b"")  # --weights must name an existing file
    cfg = parse_args(["--batch-sizes", "16,64", "--frameworks", "jax", "--methods", "loop,vmap", "--dtype",
                      "float64", "--device", "cpu", "--repeats", "7", "--weights", str(tmp_path / "w.safetensors"),
                      "--out", str(tmp_path / "d"), "--resume", "--env", "XLA_FLAGS=--xla_foo=1", "--full"])
    assert cfg.batch_sizes == (16, 64) and cfg.frameworks == ("jax",) and cfg.methods == ("loop", "vmap")
    assert (cfg.dtype, cfg.device, cfg.repeats, cfg.resume) == ("float64", "cpu", 7, True)
    assert cfg.weights == tmp_path / "w.safetensors" and cfg.out == tmp_path / "d"
    assert cfg.env == (("XLA_FLAGS", "--xla_foo=1"),)


@pytest.mark.parametrize("argv", [["--batch-sizes", "0,16"], ["--batch-sizes", "a"], ["--frameworks", "tf"],
                                  ["--repeats", "0"], ["--env", "NOEQUALS"], ["--device", "tpu"]])
def test_bad_options_are_rejected(argv, capsys):
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert "error" in capsys.readouterr().err


def test_help_shows_examples(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    assert "python -m compare.run --full --resume" in capsys.readouterr().out


def test_plan_always_has_the_reference_and_filters_methods(tmp_path):
    cfg = parse_args(["--batch-sizes", "4,2", "--methods", "loop", "--out", str(tmp_path)])
    plan = plan_points(cfg, tmp_path / "w", "cpu")
    assert [(s.batch_size, s.framework, s.method) for s in plan] == [
        (b, fw, m) for b in (2, 4) for fw in ("torch", "jax") for m in ("batched", "loop")]
    with pytest.raises(ValueError, match="unknown method"):
        plan_points(parse_args(["--methods", "warp"]), tmp_path / "w", "cpu")


class FakeRunner:
    """Stands in for the subprocess: records calls, fails chosen points, 'gets killed' after ``kill_after``."""

    def __init__(self, fail: dict | None = None, kill_after: int | None = None) -> None:
        self.calls: list[tuple] = []
        self.fail, self.kill_after = fail or {}, kill_after

    def __call__(self, spec: PointSpec, *, env: dict, timeout: float) -> dict:
        if self.kill_after is not None and len(self.calls) == self.kill_after:
            raise KeyboardInterrupt  # the run dies while this point is being measured
        self.calls.append(spec.key())
        status = self.fail.get((spec.framework, spec.method, spec.batch_size), "ok")
        record = failure_record(asdict(spec), status, "" if status == "ok" else "injected failure")
        if status == "ok":
            record.update(median_ms=float(len(self.calls)), iqr_ms=0.0, min_ms=1.0, repeats=1, compile_ms=0.0,
                          first_call_ms=1.0, peak_mem_bytes=1)
        return record


def _sweep(tmp_path: Path, runner: FakeRunner, *extra: str, monkeypatch) -> dict:
    monkeypatch.setattr(sweep, "run_floor", lambda **_: FAKE_FLOOR)
    cfg = parse_args(["--batch-sizes", "1,2", "--methods", "loop", "--out", str(tmp_path), *extra])
    plan = plan_points(cfg, tmp_path / "w", "cpu")
    run_sweep(cfg, plan, env={"MALLOC_MMAP_MAX_": "0"}, device="cpu", agreement=None, argv=[], config={},
              runner=runner, pair_runner=fake_pairs)
    return json.loads((tmp_path / "results.json").read_text())


def test_resume_after_a_kill_loses_no_finished_point_and_reruns_none(tmp_path, monkeypatch):
    first = FakeRunner(kill_after=3)
    with pytest.raises(KeyboardInterrupt):
        _sweep(tmp_path, first, monkeypatch=monkeypatch)
    lines = (tmp_path / "points.jsonl").read_text().splitlines()
    assert len(lines) == 3
    with open(tmp_path / "points.jsonl", "a") as fh:  # a kill in the middle of writing a line
        fh.write('{"framework": "jax", "kind": "per_sa')
    second = FakeRunner()
    results = _sweep(tmp_path, second, "--resume", monkeypatch=monkeypatch)
    assert len(second.calls) == 8 - 3 and not set(second.calls) & set(first.calls)
    assert sorted(point_key(r) for r in results["timings"]) == sorted(first.calls + second.calls)
    kept = {point_key(r): r["unpaired_median_ms"] for r in results["timings"]}  # the point process's median
    assert [kept[k] for k in first.calls] == [1.0, 2.0, 3.0]  # the first run's own measurements
    assert len((tmp_path / "points.jsonl").read_text().splitlines()) == 8


def test_resume_refuses_a_different_environment(tmp_path, monkeypatch):
    _sweep(tmp_path, FakeRunner(), monkeypatch=monkeypatch)
    cfg = parse_args(["--batch-sizes", "1", "--out", str(tmp_path), "--resume"])
    with pytest.raises(SystemExit, match="environment differs"):
        run_sweep(cfg, [], env={"MALLOC_MMAP_MAX_": "1"}, device="cpu", agreement=None, argv=[], config={},
                  runner=FakeRunner())


def test_a_failing_point_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
    runner = FakeRunner(fail={("torch", "loop", 1): "oom", ("jax", "batched", 1): "error"})
    results = _sweep(tmp_path, runner, monkeypatch=monkeypatch)
    status = {(r["framework"], r["method"], r["batch_size"]): (r["status"], r["reason"]) for r in results["timings"]}
    assert status[("torch", "loop", 1)] == ("oom", "injected failure")
    assert status[("jax", "batched", 1)] == ("error", "injected failure")
    assert status[("torch", "loop", 2)] == ("skipped", "not tried: B=1 already ended in oom")
    assert status[("jax", "batched", 2)][0] == "ok"  # an error is not a reason to skip larger batches
    assert len(runner.calls) == 7 and len(results["timings"]) == 8


def test_real_point_failures_become_records(tmp_path, weights_file):
    spec = PointSpec("jax", "per_sample", "no_such_method", 1, "float32", "cpu", "nll_log_softmax",
                     str(weights_file), min_repeats=1, min_seconds=0.0)
    err = run_point(spec, env=run.point_env(parse_args([])), timeout=120)
    assert err["status"] == "error" and "no_such_method" in err["reason"]
    slow = run_point(dataclasses.replace(spec, method="vmap"), env=run.point_env(parse_args([])), timeout=0.05)
    assert slow["status"] == "timeout" and slow["median_ms"] is None
    assert set(TIMING_FIELDS) <= set(err) and set(TIMING_FIELDS) <= set(slow)


@pytest.fixture
def weights_file(tmp_path, weights) -> Path:
    from compare.weights import save_weights

    return save_weights(tmp_path / "w.safetensors", weights)


TYPES = {"model": str, "framework": str, "method": str, "kind": str, "batch_size": int, "dtype": str, "device": str,
         "median_ms": float, "iqr_ms": float, "min_ms": float, "repeats": int, "compile_ms": float,
         "first_call_ms": float, "peak_mem_bytes": int, "status": str, "reason": str}


def test_schema_types_cover_every_timing_field():
    assert set(TYPES) == set(TIMING_FIELDS)


def test_main_writes_the_results_schema_and_figures(tmp_path, weights_file, monkeypatch):
    """One real sweep (2 subprocess points, B=1, one timed call each)."""
    monkeypatch.setattr(sweep, "run_floor", lambda **_: FAKE_FLOOR)
    code = run.main(["--batch-sizes", "1", "--frameworks", "jax", "--methods", "vmap", "--repeats", "1",
                     "--min-seconds", "0", "--rounds", "3", "--no-agreement", "--weights", str(weights_file),
                     "--out", str(tmp_path)])
    assert code == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results) == {"schema_version", "meta", "agreement", "floor", "timings"}
    for key in ("date", "command", "git_commit", "device", "cores", "versions", "xla_flags", "env", "threads"):
        assert key in results["meta"], key
    assert {"python", "torch", "jax", "jaxlib", "flax", "optax"} <= set(results["meta"]["versions"])
    assert results["meta"]["env"]["MALLOC_MMAP_MAX_"] == "0"  # the point environment is recorded
    assert [(r["kind"], r["method"]) for r in results["timings"]] == [("reference", "batched"), ("per_sample", "vmap")]
    for r in results["timings"]:
        assert r["status"] == "ok", r["reason"]
        for field in TIMING_FIELDS:
            assert isinstance(r[field], TYPES[field]), (field, r[field])
    assert results["timings"][1]["ratio_to_floor"] > 0
    # batched and vmap timed as one pair group (--rounds 3): every round kept, the floor ratio paired
    vmap = results["timings"][1]
    assert len(vmap["rounds_ms"]) == len(results["timings"][0]["rounds_ms"]) >= 3
    assert vmap["ratio_to_floor"] == vmap["ratios"]["floor"]["median"] and "verdict" in vmap["ratios"]["floor"]
    assert (tmp_path / "figures" / "time_per_batch.png").stat().st_size > 0


def test_main_exits_nonzero_after_writing_results_when_agreement_fails(tmp_path, weights_file, monkeypatch):
    monkeypatch.setattr(run, "run_agreement_check", lambda cfg, w, d: ({"ok": False}, False))
    monkeypatch.setattr(sweep, "run_floor", lambda **_: None)
    monkeypatch.setattr(sweep, "run_point", FakeRunner())
    code = run.main(["--batch-sizes", "1", "--frameworks", "torch", "--methods", "loop", "--no-figures",
                     "--weights", str(weights_file), "--out", str(tmp_path)])
    results = json.loads((tmp_path / "results.json").read_text())
    assert code == 1 and results["agreement"] == {"ok": False} and len(results["timings"]) == 2
