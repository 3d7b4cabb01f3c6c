"""``compare.run --model`` / ``--suite`` and the per-workload results: planning, records, tables, figures.

The sweep runs with a fake runner (no subprocess, no timing): what is checked is which points are planned, what
every record carries and how the study's rows are derived from the records, not how fast anything is.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from compare.benchmark import sweep
from compare.benchmark.cli import main, parse_args, resolve_weights, weights_file
from compare.benchmark.config import SUITES
from compare.benchmark.point import PointSpec
from compare.benchmark.results import failure_record, point_key
from compare.benchmark.latex_tables import steps_table
from compare.benchmark.suite import markdown_tables, suite_rows
from compare.benchmark.sweep import plan_points, run_sweep
from compare.spec import MODELS
from compare.weights import WeightsError, init_weights, save_weights

FAKE_FLOOR = {"bytes_per_s": 1e10, "best_kernel": "fake"}


def fake_pairs(specs: list[PointSpec], *, env: dict, timeout: float, rounds: int, min_seconds: float,
               seed: int) -> dict:
    """Stands in for the pair process: three equal rounds of each member's made-up time."""
    ms = {s.method: _fake_runner(s, env=env, timeout=timeout)["median_ms"] for s in specs}
    return {"members": {m: {"rounds_ms": [t] * 3, "calls_per_round": 1} for m, t in ms.items()},
            "loadavg_max": 0.0, "cores": 2}


def _fake_runner(spec: PointSpec, *, env: dict, timeout: float) -> dict:
    record = failure_record(asdict(spec), "ok", "")
    # a made-up time that differs per method, so that "best" has one answer
    ms = {"sgd": 10.0, "dp_sgd": 30.0, "dp_ghost": 14.0, "dp_bk": 12.0, "opacus_sgd": 40.0, "opacus_ghost": 25.0,
          "jax_privacy": 50.0, "batched": 9.0, "per_layer": 11.0, "vmap": 20.0, "vmap_patches": 15.0}[spec.method]
    record.update(median_ms=ms * spec.batch_size, iqr_ms=0.0, min_ms=ms, repeats=1, compile_ms=0.0, first_call_ms=ms,
                  peak_mem_bytes=1)
    return record


def test_model_flag_parses_names_and_all():
    assert parse_args([]).models == ("seed_cnn",)
    assert parse_args(["--model", "logreg,embed"]).models == ("logreg", "embed")
    assert parse_args(["--model", "all"]).models == tuple(MODELS)


def test_bad_model_name_is_one_usage_line(capsys):
    with pytest.raises(SystemExit) as exc:
        parse_args(["--model", "logreg,resnet"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "unknown model 'resnet'" in err[-1] and "seed_cnn" in err[-1]


def test_weights_file_with_several_models_is_refused(capsys, tmp_path):
    (tmp_path / "w.safetensors").write_bytes(b"")
    with pytest.raises(SystemExit):
        parse_args(["--model", "logreg,ffnn", "--weights", str(tmp_path / "w.safetensors")])
    assert "--weights names one workload's file" in capsys.readouterr().err


def test_a_weights_file_of_another_workload_is_one_clear_error(tmp_path, caplog):
    path = tmp_path / "ffnn.safetensors"
    save_weights(path, init_weights(0, model="ffnn"), model="ffnn")
    assert main(["--model", "logreg", "--weights", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "weights of model 'ffnn', not of model 'logreg'" in caplog.text
    with pytest.raises(WeightsError, match="'ffnn'"):
        resolve_weights(parse_args(["--model", "logreg", "--weights", str(path)]))


def test_each_workload_gets_its_own_weights_file(tmp_path):
    cfg = parse_args(["--model", "seed_cnn,logreg", "--out", str(tmp_path)])
    paths = {m: resolve_weights(cfg, m)[0] for m in cfg.models}
    assert paths == {"seed_cnn": tmp_path / "weights_seed0.safetensors",
                     "logreg": tmp_path / "weights_logreg_seed0.safetensors"}
    assert weights_file(tmp_path) == paths["seed_cnn"]  # the seed CNN's file keeps its name


def test_suite_presets_and_explicit_options_win():
    cfg = parse_args(["--suite", "fast-dpsgd"])
    assert cfg.models == tuple(MODELS) and cfg.batch_sizes == (16, 32, 64, 128, 256)
    assert set(cfg.methods) >= {"sgd", "dp_bk", "opacus_sgd", "opacus_ghost", "jax_privacy", "per_layer"}
    cfg = parse_args(["--suite", "fast-dpsgd", "--model", "logreg", "--batch-sizes", "4"])
    assert cfg.models == ("logreg",) and cfg.batch_sizes == (4,) and cfg.methods == SUITES["fast-dpsgd"]["methods"]


def test_suite_times_wrn16_4_at_small_batches_on_cpu_only(tmp_path):
    """The study's WRN-16-4 points: B = 16-64 on a CPU, the suite's sizes on a GPU; --batch-sizes wins."""
    cfg = parse_args(["--suite", "fast-dpsgd", "--model", "wrn16_4,logreg", "--out", str(tmp_path)])
    paths = {m: tmp_path / f"{m}.safetensors" for m in cfg.models}
    sizes = lambda device, model: sorted({s.batch_size for s in plan_points(cfg, paths, device)  # noqa: E731
                                          if s.model == model})
    assert sizes("cpu", "wrn16_4") == [16, 32, 64] and sizes("cpu", "logreg") == [16, 32, 64, 128, 256]
    assert sizes("cuda", "wrn16_4") == [16, 32, 64, 128, 256]
    cfg = parse_args(["--suite", "fast-dpsgd", "--model", "wrn16_4", "--batch-sizes", "128"])
    assert sorted({s.batch_size for s in plan_points(cfg, {"wrn16_4": tmp_path / "w"}, "cpu")}) == [128]


def test_plan_covers_every_workload_and_records_not_applicable_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "run_floor", lambda **_: FAKE_FLOOR)
    cfg = parse_args(["--model", "logreg,mnist_cnn", "--batch-sizes", "2", "--methods", "per_layer,vmap_patches,dp_bk",
                      "--out", str(tmp_path)])
    paths = {m: resolve_weights(cfg, m)[0] for m in cfg.models}
    plan = plan_points(cfg, paths, "cpu")
    assert {s.model for s in plan} == {"logreg", "mnist_cnn"}
    assert all(Path(s.weights) == paths[s.model] for s in plan)
    run_sweep(cfg, plan, env={}, device="cpu", agreement=None, argv=[], config={}, runner=_fake_runner,
              pair_runner=fake_pairs)
    timings = json.loads((tmp_path / "results.json").read_text())["timings"]
    assert all(r["model"] in ("logreg", "mnist_cnn") for r in timings)
    na = [r for r in timings if r["status"] == "not_applicable"]
    assert [(r["model"], r["framework"], r["method"]) for r in na] == [("logreg", "jax", "vmap_patches")]
    assert "no convolution" in na[0]["reason"]
    patches = [r for r in timings if r["model"] == "mnist_cnn" and r["method"] == "vmap_patches"]
    assert [r["status"] for r in patches] == ["ok"]
    floors = {r["model"]: r["floor_ms"] for r in timings if r["method"] == "per_layer" and r["framework"] == "jax"}
    # the floor writes each workload's own parameter count: 210 values for logreg, 26,010 for mnist_cnn
    assert floors["logreg"] == pytest.approx(9.0 * 2 + 2 * 210 * 4 / 1e10 * 1e3)
    assert floors["mnist_cnn"] == pytest.approx(9.0 * 2 + 2 * 26010 * 4 / 1e10 * 1e3)


def test_records_without_model_are_the_seed_cnns():
    old = {"framework": "torch", "kind": "per_sample", "method": "vmap", "batch_size": 4, "dtype": "float32",
           "device": "cpu", "loss": "nll_log_softmax", "chunk_size": None}
    assert point_key(old) == point_key({**old, "model": "seed_cnn"})
    assert point_key(old) != point_key({**old, "model": "logreg"})


def _records(model: str, bsz: int) -> list[dict]:
    spec = {"model": model, "batch_size": bsz, "dtype": "float32", "device": "cpu", "status": "ok", "reason": ""}
    out = []
    for fw, kind, method, ms in [("torch", "dp", "sgd", 10), ("torch", "dp", "dp_bk", 12), ("torch", "dp", "dp_sgd", 20),
                                 ("torch", "dp", "opacus_ghost", 30), ("torch", "dp", "opacus_sgd", 24),
                                 ("torch", "per_sample", "per_layer", 11), ("jax", "dp", "sgd", 5),
                                 ("jax", "dp", "dp_ghost", 6), ("jax", "dp", "jax_privacy", 50),
                                 ("jax", "per_sample", "vmap", 9)]:
        out.append({**spec, "framework": fw, "kind": kind, "method": method, "median_ms": float(ms),
                    "ratio_to_floor": 1.5 if kind == "per_sample" else None})
    out.append({**spec, "framework": "jax", "kind": "dp", "method": "dp_bk", "median_ms": None, "status": "oom"})
    return out


def test_suite_rows_pick_the_best_step_of_each_framework_and_peer():
    rows = suite_rows(_records("logreg", 16) + _records("embed", 16))
    assert [r["model"] for r in rows] == ["logreg", "embed"]
    torch, jax = rows[0]["torch"], rows[0]["jax"]
    assert torch["private"] == {"method": "dp_bk", "ms": 12.0, "x_sgd": 1.2}
    assert torch["peer_best"]["method"] == "opacus_sgd" and torch["peer_best"]["over_ours"] == pytest.approx(2.0)
    assert jax["private"]["method"] == "dp_ghost"  # the oom dp_bk point is not a candidate
    assert jax["peer_best"]["x_sgd"] == pytest.approx(10.0)
    assert jax["per_sample"] == {"method": "vmap", "ms": 9.0, "ratio_to_floor": 1.5}
    md = markdown_tables(rows)
    tex = steps_table(_records("logreg", 16) + _records("embed", 16), {"versions": {"torch": "2.15.0"}}, "tab:x")
    assert "**logreg**" in md and "| 16 | 10 | 12 (1.20x, dp_bk)" in md
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"\label{tab:x}" in tex
    assert r"logreg & 16 & 10.0 & \texttt{dp\_bk} & 1.20 & 2.40 & 5.00 & \texttt{dp\_ghost} & 1.20 & 10.0 \\" in tex


def test_figures_of_several_workloads_go_per_workload_plus_the_suite(tmp_path):
    from compare.benchmark.figures import make_figures

    timings = [{**r, "iqr_ms": 0.0, "min_ms": r["median_ms"], "repeats": 1, "compile_ms": None,
                "first_call_ms": None, "peak_mem_bytes": None}
               for b in (16, 32) for m in ("logreg", "embed") for r in _records(m, b)]
    (tmp_path / "results.json").write_text(json.dumps({"meta": {"device": "test cpu"}, "agreement": None,
                                                       "floor": None, "timings": timings}))
    written = {p.relative_to(tmp_path / "figures").as_posix() for p in make_figures(tmp_path)}
    assert {"suite_steps.pdf", "suite_table.tex", "suite_tables.md", "logreg/dp_overhead.png",
            "embed/time_per_batch.pdf"} <= written
