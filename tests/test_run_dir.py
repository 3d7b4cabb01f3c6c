"""compare.run's directory: no run is overwritten, the agreement resumes per workload, the run says what it
reuses, and the output ends with a verdict. Points are faked (tests/test_run.py's FakeRunner), no subprocess."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from compare.benchmark import cli as run, sweep
from compare.benchmark.results import failure_record, relevant_env
from compare.benchmark.verdict import faster_words, verdict_lines
from compare.rundir import archive
from compare.training.cli import parse_args as train_args
from tests.test_run import FAKE_FLOOR, FakeRunner

TINY = ["--batch-sizes", "1", "--frameworks", "torch", "--methods", "loop", "--no-figures"]


@pytest.fixture
def fake_points(monkeypatch) -> FakeRunner:
    runner = FakeRunner()
    monkeypatch.setattr(sweep, "run_floor", lambda **_: FAKE_FLOOR)
    monkeypatch.setattr(sweep, "run_point", runner)
    return runner


class FakeReport:
    def __init__(self, model: str) -> None:
        self.model = model

    def format_table(self) -> str:
        return f"table of {self.model}"

    def to_json(self) -> dict:
        return {"ok": True, "model": self.model}


def test_runs_into_one_directory_keep_every_earlier_run(tmp_path, fake_points, caplog):
    caplog.set_level(logging.INFO)
    for _ in range(3):
        assert run.main([*TINY, "--no-agreement", "--out", str(tmp_path)]) == 0
    kept = sorted((tmp_path / "runs").iterdir())
    assert len(kept) == 2  # the first two runs, each complete
    for folder in kept:
        assert json.loads((folder / "results.json").read_text())["timings"]
        assert len((folder / "points.jsonl").read_text().splitlines()) == 2
    assert (tmp_path / "results.json").is_file() and "moved it to" in caplog.text and "--resume" in caplog.text
    assert (tmp_path / "weights_seed0.safetensors").is_file()  # the shared input stays where it was


def test_an_interrupted_agreement_resumes_per_workload(tmp_path, fake_points, monkeypatch, caplog, capsys):
    import compare.agreement as agreement

    calls: list[str] = []

    def interrupted_after_one(w, x, y, *, model="seed_cnn", **_):
        if calls:
            raise KeyboardInterrupt  # Ctrl-C during the second workload's check
        calls.append(model)
        return FakeReport(model)

    monkeypatch.setattr(agreement, "run_agreement", interrupted_after_one)
    args = [*TINY, "--model", "logreg,ffnn", "--out", str(tmp_path)]
    assert run.main(args) == 130
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("interrupted (SIGINT): kept the agreement of logreg") and line.endswith("--resume")
    assert not (tmp_path / "points.jsonl").exists()

    calls.clear()
    monkeypatch.setattr(agreement, "run_agreement", lambda w, x, y, *, model="seed_cnn", **_: (
        calls.append(model), FakeReport(model))[1])
    caplog.set_level(logging.INFO)
    assert run.main([*args, "--resume"]) == 0
    assert calls == ["ffnn"]  # logreg's saved report is reused, not checked again
    assert "agreement: reusing the saved report of logreg; checking ffnn" in caplog.text
    assert "points: 0 of 4 already recorded" in caplog.text
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["agreement"]["by_model"]) == {"logreg", "ffnn"} and results["agreement"]["ok"]


def test_resume_says_which_points_it_keeps_and_checks_the_environment_first(tmp_path, fake_points, caplog):
    assert run.main([*TINY, "--no-agreement", "--out", str(tmp_path)]) == 0
    caplog.set_level(logging.INFO)
    assert run.main([*TINY, "--no-agreement", "--batch-sizes", "1,2", "--out", str(tmp_path), "--resume"]) == 0
    assert "points: 2 of 4 already recorded (kept, not run again), 2 to run" in caplog.text
    assert run.main([*TINY, "--no-agreement", "--out", str(tmp_path), "--resume", "--malloc", "system"]) == 2
    assert "cannot --resume" in caplog.text and "MALLOC_MMAP_MAX_" in caplog.text


def test_the_quick_run_ends_with_the_verdict(tmp_path, fake_points, capsys):
    assert run.main(["--batch-sizes", "1", "--methods", "vmap,dp_bk", "--no-agreement", "--no-figures",
                     "--out", str(tmp_path)]) == 0
    tail = capsys.readouterr().out.strip().splitlines()[-4:]
    assert tail[0] == "-------"
    assert tail[1].startswith("agree?") and "not checked" in tail[1]
    assert tail[2].startswith("faster?") and "at per-sample gradients" in tail[2]
    assert "faster than" in tail[2] or "about as fast" in tail[2]  # the pair groups time for real here
    assert tail[3].startswith("private step") and "x its SGD step" in tail[3]


def _rec(fw: str, kind: str, method: str, ms: float, bsz: int = 32) -> dict:
    r = failure_record({"framework": fw, "kind": kind, "method": method, "batch_size": bsz, "dtype": "float32",
                        "device": "cpu", "model": "seed_cnn"}, "ok", "")
    r["median_ms"] = ms
    return r


def test_verdict_words_and_ratios():
    assert faster_words(10.0, 19.0) == "torch is 1.9x faster than JAX"
    assert faster_words(30.0, 10.0) == "JAX is 3.0x faster than torch"
    assert faster_words(10.0, 10.3).startswith("torch and JAX are about as fast")
    timings = [_rec("torch", "per_sample", "vmap", 20.0), _rec("torch", "per_sample", "per_layer", 10.0),
               _rec("jax", "per_sample", "vmap", 15.0), _rec("torch", "dp", "sgd", 4.0),
               _rec("torch", "dp", "dp_bk", 6.0), _rec("jax", "dp", "sgd", 5.0), _rec("jax", "dp", "dp_sgd", 20.0),
               _rec("jax", "dp", "dp_bk", 7.5)]
    lines = verdict_lines({"agreement": {"ok": False, "by_model": {"a": {"ok": True}, "b": {"ok": False}}},
                           "timings": timings})
    assert lines[0].endswith("NO on b (see their agreement tables above); yes on the other 1")
    assert "torch is 1.5x faster than JAX" in lines[1] and "torch per_layer 10.0 ms, JAX vmap 15.0 ms" in lines[1]
    assert lines[2].endswith("torch dp_bk 1.50x its SGD step; JAX dp_bk 1.50x its SGD step")


def test_help_explains_the_columns(capsys):
    with pytest.raises(SystemExit):
        run.parse_args(["--help"])
    out = capsys.readouterr().out
    for column in ("x ref", "vs loop", "torch/jax", "x floor", "peak MB"):
        assert f"\n  {column}" in out, column
    assert "paper/" not in out  # no example writes into the committed results


def test_frameworks_take_one_syntax_in_run_and_train():
    for argv in (["torch,jax"], ["torch", "jax"], ["torch", "jax,torch"]):
        assert run.parse_args(["--frameworks", *argv]).frameworks == ("torch", "jax")
        assert train_args(["--frameworks", *argv]).frameworks == ("torch", "jax")


def test_no_misleading_line_about_methods_when_none_were_given(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    sweep.plan_points(run.parse_args(["--batch-sizes", "1"]), tmp_path / "w", "cpu")
    assert "plans no point" not in caplog.text
    sweep.plan_points(run.parse_args(["--batch-sizes", "1", "--methods", "vmap"]), tmp_path / "w", "cpu")
    assert "--methods vmap plans no point of kind(s) dp" in caplog.text


def test_meta_env_holds_only_variables_that_change_the_frameworks():
    env = {"OMP_NUM_THREADS": "2", "XLA_FLAGS": "--x", "MALLOC_MMAP_MAX_": "0", "CUDA_VISIBLE_DEVICES": "0",
           "TF_CLI_CONFIG_FILE": "/home/u/.terraformrc", "OMP_FOO_UNRELATED": "1", "XLA_FLAGS_EXTRA": "y",
           "TORCH_HOME": "/cache", "HOME": "/root"}
    assert relevant_env(env) == {"CUDA_VISIBLE_DEVICES": "0", "MALLOC_MMAP_MAX_": "0", "OMP_NUM_THREADS": "2",
                                 "XLA_FLAGS": "--x"}


def test_committed_results_meta_env_is_still_readable():
    root = Path(__file__).resolve().parents[1] / "paper" / "cpu"
    meta = json.loads((root / "results.json").read_text())["meta"]
    kept = relevant_env(meta["env"])  # what --resume compares: the committed run's malloc setting survives
    assert kept["MALLOC_MMAP_MAX_"] == "0" and kept["MALLOC_TRIM_THRESHOLD_"] == str(1 << 40)


def test_a_training_run_is_archived_not_overwritten(tmp_path):
    (tmp_path / "train.json").write_text(json.dumps({"meta": {"created": "2026-12-01T10:00:00+0000"}}))
    (tmp_path / "train_progress.jsonl").write_text("{}\n")
    (tmp_path / "results.json").write_text("{}")  # another command's file: untouched
    dest = archive(tmp_path, "train")
    assert dest == tmp_path / "runs" / "20261201-100000"
    assert sorted(p.name for p in dest.iterdir()) == ["train.json", "train_progress.jsonl"]
    assert (tmp_path / "results.json").is_file() and archive(tmp_path, "train") is None
