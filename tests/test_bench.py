"""The timing protocol (compare.benchmark.targets), the floor (compare.benchmark.floor) and the summary table (compare.benchmark.summary)."""
from __future__ import annotations

import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from compare.benchmark import sweep
from compare.benchmark.targets import DP_HPARAMS, DP_METHODS, DP_PER_SAMPLE_METHOD, TARGETS, measure, prepare, sync_fn
from compare.benchmark.floor import add_floors, floor_ms, measure_write_bandwidth
from compare.frameworks import FRAMEWORKS, impl_module, per_sample_module
from compare.benchmark.pair import measure_group
from compare.benchmark.point import measure_point
from compare.benchmark.results import failure_record
from compare.benchmark.cli import parse_args
from compare.spec import NUM_PARAMS, make_batch
from compare.benchmark.summary import format_summary
from compare.benchmark.sweep import plan_points, run_sweep


class Counter:
    """A native-function stand-in that counts its calls and the syncs of its outputs."""

    def __init__(self, sleep_s: float = 0.0) -> None:
        self.calls, self.synced, self.sleep_s = 0, 0, sleep_s

    def __call__(self) -> int:
        self.calls += 1
        time.sleep(self.sleep_s)
        return self.calls

    def sync(self, out: int) -> int:
        self.synced += 1
        return out


def test_measure_counts_first_call_and_warmup_apart_from_the_timed_calls():
    fn = Counter()
    t = measure(fn, (), fn.sync, min_repeats=4, min_seconds=0.0, warmup=2)
    assert t.repeats == 4 == len(t.times_ms)
    assert fn.calls == fn.synced == 1 + 2 + 4  # first call + warm-up + timed: every output synced
    assert t.compile_source == "first_call_excess"
    assert t.min_ms <= t.median_ms and t.iqr_ms >= 0


def test_measure_repeats_until_the_minimum_time_is_reached():
    fn = Counter(sleep_s=0.01)
    t = measure(fn, (), fn.sync, min_repeats=1, min_seconds=0.05, warmup=0)
    assert sum(t.times_ms) >= 50.0 and t.repeats >= 2


def test_measure_compiles_jax_jit_ahead_of_time_and_blocks():
    fn = jax.jit(lambda x: jnp.sin(x) * 2)
    t = measure(fn, (jnp.ones(4, jnp.float32),), sync_fn("jax", "cpu"), min_repeats=2, min_seconds=0.0)
    assert t.compile_source == "aot" and t.compile_ms > 0 and t.first_call_ms >= t.compile_ms


@pytest.mark.parametrize("kwargs", [dict(min_repeats=0), dict(warmup=-1), dict(min_seconds=-1.0)])
def test_measure_rejects_bad_settings(kwargs):
    fn = Counter()
    with pytest.raises(ValueError, match="min_repeats"):
        measure(fn, (), fn.sync, **kwargs)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_registry_lists_each_sides_methods_and_the_batched_reference(framework):
    assert TARGETS["per_sample"].methods(framework) == tuple(per_sample_module(framework).METHODS)
    assert TARGETS["reference"].methods(framework) == ("batched",)
    assert DP_METHODS == ("sgd", "dp_sgd", "dp_ghost", "dp_bk")
    peer = {"torch": ("opacus_sgd", "opacus_ghost"), "jax": ("jax_privacy",)}[framework]  # each side's maintained DP library
    assert TARGETS["dp"].methods(framework) == DP_METHODS + peer


def test_prepare_rejects_unknown_kind_and_method(weights):
    with pytest.raises(ValueError, match="unknown kind 'dp_step'"):
        prepare("torch", "dp_step", "vmap", weights, 2, dtype="float32", device="cpu", loss="nll_log_softmax")
    with pytest.raises(ValueError, match="unknown per_sample method 'nope' for jax"):
        prepare("jax", "per_sample", "nope", weights, 2, dtype="float32", device="cpu", loss="nll_log_softmax")
    with pytest.raises(ValueError, match="unknown reference method 'vmap'"):
        prepare("jax", "reference", "vmap", weights, 2, dtype="float32", device="cpu", loss="nll_log_softmax")
    with pytest.raises(ValueError, match="unknown dp method 'vmap' for torch"):
        prepare("torch", "dp", "vmap", weights, 2, dtype="float32", device="cpu", loss="nll_log_softmax")
    with pytest.raises(ValueError, match="chunk_size does not apply to the dp kind"):
        prepare("jax", "dp", "dp_sgd", weights, 2, dtype="float32", device="cpu", loss="nll_log_softmax",
                chunk_size=1)
    with pytest.raises(ValueError, match="unknown framework"):
        sync_fn("tensorflow", "cpu")


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_prepared_reference_is_the_gradient_of_the_mean_loss(framework, weights):
    """The timed reference computes what ordinary training does: its result has no per-sample axis."""
    fn, args = prepare(framework, "reference", "batched", weights, 3, dtype="float64", device="cpu",
                       loss="nll_log_softmax")
    grads = sync_fn(framework, "cpu")(fn(*args))
    assert sum(int(np.prod(g.shape)) for g in jax.tree.leaves(grads)) == NUM_PARAMS  # a dict or an nnx.State


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_prepared_dp_steps_are_the_dp_modules_steps_with_noise_made_outside(framework, weights):
    """``sgd`` is make_sgd_step, ``dp_sgd`` is make_step with DP_HPARAMS and a native noise draw already in its
    arguments (nothing is converted in the timed call). float64, so the steps agree to ~1e-12 (same operations,
    up to XLA/ATen scheduling)."""
    dp, wmod = impl_module(framework, "dp"), impl_module(framework, "weights")
    x, y = make_batch(3, 0)
    batch = dp.native_batch(x, y, dtype="float64", device="cpu")
    params = wmod.to_native(weights, "float64", "cpu")
    fn, args = prepare(framework, "dp", "sgd", weights, 3, dtype="float64", device="cpu", loss="nll_log_softmax")
    want, _ = dp.make_sgd_step(lr=DP_HPARAMS["lr"])(params, *batch)
    got = sync_fn(framework, "cpu")(fn(*args))[0]
    _assert_same_params(wmod, got, want)
    fn, args = prepare(framework, "dp", "dp_sgd", weights, 3, dtype="float64", device="cpu", loss="nll_log_softmax")
    assert len(args) == 4
    noise = wmod.to_canonical(args[3])
    assert set(noise) == set(weights) and all(noise[k].shape == weights[k].shape for k in weights)
    # N(0, 1): the std of 1.2M draws is 1 +- 0.0007 (one sigma), so +-0.01 fails only a wrong scale or a zero draw
    assert abs(np.std(np.concatenate([v.ravel() for v in noise.values()])) - 1.0) < 0.01
    want, _ = dp.make_step(**DP_HPARAMS, per_sample_method=DP_PER_SAMPLE_METHOD)(params, *batch, args[3])
    _assert_same_params(wmod, sync_fn(framework, "cpu")(fn(*args))[0], want)
    assert TARGETS["dp"].details(framework, "dp_sgd")["per_sample_method"] == DP_PER_SAMPLE_METHOD


@pytest.mark.parametrize("framework,method", [("torch", "dp_bk"), ("jax", "dp_bk"), ("torch", "opacus_ghost"),
                                              ("jax", "jax_privacy")])
def test_prepared_private_steps_take_the_materialising_steps_update(framework, method, weights):
    """Every timed private step is a real DP-SGD step: same update as ``dp_sgd`` for the same noise (float64).
    (tests/test_clipping.py covers every strategy and peer in depth; this checks the benchmark's wiring.)"""
    wmod = impl_module(framework, "weights")
    fn, args = prepare(framework, "dp", "dp_sgd", weights, 3, dtype="float64", device="cpu", loss="nll_log_softmax")
    want = sync_fn(framework, "cpu")(fn(*args))[0]
    fn, args = prepare(framework, "dp", method, weights, 3, dtype="float64", device="cpu", loss="nll_log_softmax")
    # Opacus clips with clip / (||g|| + 1e-6): a clipped example's factor differs by ~1e-6 / ||g|| relative
    # (torch_impl/opacus_step.py); measured 3e-8 here. Everything else is the same arithmetic: 1e-10.
    _assert_same_params(wmod, sync_fn(framework, "cpu")(fn(*args))[0], want,
                        rtol=1e-6 if method == "opacus_ghost" else 1e-10)
    assert TARGETS["dp"].details(framework, method)["clipping"] == {"dp_bk": "bk"}.get(method, method)


def _assert_same_params(wmod, got, want, rtol: float = 1e-12) -> None:
    """Relative to each parameter's max |value| (as compare.agreement does): entries near 0 carry no meaning."""
    got, want = wmod.to_canonical(got), wmod.to_canonical(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=0, atol=rtol * np.abs(want[k]).max(), err_msg=k)


def test_tiny_sweep_plans_and_measures_the_dp_kind(tmp_path, weights, monkeypatch, capsys):
    """B=2, one timed call per point, measured in this process (the subprocess runner is tested in test_run)."""
    from compare.weights import save_weights

    monkeypatch.setattr(sweep, "run_floor", lambda **_: None)
    w = save_weights(tmp_path / "w.safetensors", weights)
    cfg = parse_args(["--batch-sizes", "2", "--methods", "dp_sgd", "--repeats", "1", "--min-seconds", "0",
                      "--out", str(tmp_path)])
    plan = plan_points(cfg, w, "cpu")
    assert [(s.framework, s.kind, s.method) for s in plan] == [
        (fw, k, m) for fw in FRAMEWORKS for k, m in (("reference", "batched"), ("dp", "sgd"), ("dp", "dp_sgd"))]
    run_sweep(cfg, plan, env={}, device="cpu", agreement=None, argv=[], config={},
              runner=lambda spec, env, timeout: measure_point(spec),
              pair_runner=lambda specs, env, timeout, rounds, min_seconds, seed: measure_group(specs, 3, 0.0, seed))
    timings = json.loads((tmp_path / "results.json").read_text())["timings"]
    dp = [r for r in timings if r["kind"] == "dp"]
    assert len(dp) == 4 and all(r["status"] == "ok" and r["median_ms"] > 0 for r in dp), dp
    # sgd and dp_sgd of each framework timed in one pair group: 3 rounds each, dp_sgd's ratio with its interval
    assert all(len(r["rounds_ms"]) == 3 and r["pair"]["members"] == ["dp_sgd", "sgd"] for r in dp)
    ratio = next(r for r in dp if r["method"] == "dp_sgd")["ratios"]["sgd"]
    assert ratio["ci95"][0] <= ratio["median"] <= ratio["ci95"][1] and ratio["verdict"] in ("met", "missed",
                                                                                             "undecided")
    assert {(r["method"], r["per_sample_method"]) for r in dp} == {("sgd", None), ("dp_sgd", DP_PER_SAMPLE_METHOD)}
    assert all(r["dp_hparams"] == DP_HPARAMS for r in dp)
    out = capsys.readouterr().out
    assert out.count("DP overhead") == 2 and "DP overhead jax: dp_sgd" in out


def test_methods_select_dp_steps_with_their_sgd_baseline(tmp_path):
    def planned(*methods: str) -> set[tuple[str, str]]:
        cfg = parse_args(["--batch-sizes", "2", "--frameworks", "torch", "--methods", ",".join(methods)])
        return {(s.kind, s.method) for s in plan_points(cfg, tmp_path / "w", "cpu")}

    assert planned("vmap") == {("reference", "batched"), ("per_sample", "vmap")}  # no DP step unless named
    assert planned("vmap", "sgd") == {("reference", "batched"), ("per_sample", "vmap"), ("dp", "sgd")}
    assert planned("vmap", "dp_sgd") == {
        ("reference", "batched"), ("per_sample", "vmap"), ("dp", "sgd"), ("dp", "dp_sgd")}  # sgd: the denominator
    assert planned("dp_bk", "opacus_ghost") == {
        ("reference", "batched"), ("dp", "sgd"), ("dp", "dp_bk"), ("dp", "opacus_ghost")}
    with pytest.raises(ValueError, match="jax_privacy"):  # the other framework's peer: named, so an error
        planned("jax_privacy")
    everything = {(s.kind, s.method) for s in plan_points(parse_args(["--batch-sizes", "2"]), tmp_path / "w", "cpu")}
    # the default (quick and --full) times every DP step
    assert {("dp", m) for m in ("sgd", "dp_sgd", "dp_ghost", "dp_bk", "opacus_ghost")} <= everything


def test_floor_adds_the_output_write_to_the_reference():
    # 64 samples x 1,199,882 float32 values = 307.17 MB; at 10 GB/s that is 30.72 ms.
    assert floor_ms(20.0, 64, 4, 10e9) == pytest.approx(20.0 + 64 * NUM_PARAMS * 4 / 10e9 * 1e3)


def _rec(fw: str, kind: str, method: str, b: int, median: float | None, status: str = "ok") -> dict:
    spec = dict(framework=fw, kind=kind, method=method, batch_size=b, dtype="float32", device="cpu",
                loss="nll_log_softmax", chunk_size=None)
    r = failure_record(spec, status, "" if status == "ok" else "boom")
    r.update(median_ms=median, iqr_ms=0.0 if median else None, peak_mem_bytes=None)
    return r


def test_add_floors_sets_ratio_only_where_the_reference_ran():
    t = [_rec("torch", "reference", "batched", 8, 10.0), _rec("torch", "per_sample", "vmap", 8, 40.0),
         _rec("jax", "per_sample", "vmap", 8, 40.0), _rec("torch", "per_sample", "loop", 8, None, "oom")]
    add_floors(t, 1e9)
    fl = floor_ms(10.0, 8, 4, 1e9)
    assert t[1]["floor_ms"] == pytest.approx(fl) and t[1]["ratio_to_floor"] == pytest.approx(40.0 / fl)
    assert t[2]["floor_ms"] is None and t[2]["ratio_to_floor"] is None  # no jax reference at B=8
    assert t[3]["ratio_to_floor"] is None and "floor_ms" not in t[0]


def test_write_bandwidth_measurement_reports_every_kernel():
    out = measure_write_bandwidth("cpu", nbytes=1 << 20, repeats=2)
    assert set(out["kernels_bytes_per_s"]) == {"numpy_fill", "torch_fill", "torch_zero"}
    assert out["bytes_per_s"] == max(out["kernels_bytes_per_s"].values()) > 0


def test_summary_table_ratios():
    t = [_rec("torch", "reference", "batched", 8, 10.0), _rec("torch", "per_sample", "loop", 8, 80.0),
         _rec("torch", "per_sample", "vmap", 8, 20.0), _rec("jax", "reference", "batched", 8, 20.0),
         _rec("jax", "per_sample", "vmap", 8, 40.0), _rec("jax", "per_sample", "loop", 8, None, "timeout")]
    text = format_summary(t)
    vmap_row = next(line for line in text.splitlines() if line.startswith("torch") and " vmap " in line)
    # torch vmap: 2.00x its reference, 4.00x faster than torch loop, torch/jax = 20/40 = 0.50
    assert vmap_row.split()[4:7] == ["2.00", "4.00", "0.50"]
    assert "timeout: boom" in text
    assert "best per-sample: torch vmap 20.0 ms, jax vmap 40.0 ms, torch/jax = 0.50" in text
    assert "DP overhead" not in text  # no dp records


def test_summary_dp_overhead_line_per_framework_and_batch():
    t = [_rec("torch", "dp", "sgd", 8, 10.0), _rec("torch", "dp", "dp_sgd", 8, 35.0),
         _rec("jax", "dp", "sgd", 8, 4.0), _rec("jax", "dp", "dp_sgd", 8, 10.0),
         _rec("torch", "dp", "sgd", 16, 20.0), _rec("torch", "dp", "dp_sgd", 16, None, "oom"),
         _rec("torch", "per_sample", "vmap", 8, 20.0), _rec("torch", "reference", "batched", 8, 5.0)]
    for r in t:
        r["per_sample_method"] = "vmap" if r["method"] == "dp_sgd" else None
    text = format_summary(t)
    assert "DP overhead torch: dp_sgd 35.0 ms / sgd 10.0 ms = 3.50x (unpaired) (per-sample: vmap)" in text
    assert "DP overhead jax: dp_sgd 10.0 ms / sgd 4.0 ms = 2.50x (unpaired) (per-sample: vmap)" in text
    assert text.count("DP overhead") == 2  # none at B=16: its dp_sgd ran out of memory
    torch_rows = [line.split()[1] for line in text.split("B=16")[0].splitlines() if line.startswith("torch ")]
    assert torch_rows == ["batched", "vmap", "dp_sgd", "sgd"]  # reference, per-sample, then the DP steps


def test_summary_names_the_best_private_step_in_time_and_memory():
    t = [_rec("jax", "dp", "sgd", 8, 10.0), _rec("jax", "dp", "dp_sgd", 8, 20.0), _rec("jax", "dp", "dp_bk", 8, 11.0),
         _rec("jax", "dp", "jax_privacy", 8, 30.0)]
    for r, (peak, clipping) in zip(t, [(100, None), (300, "materialize"), (120, "bk"), (400, "jax_privacy")]):
        r.update(peak_mem_bytes=peak, clipping=clipping, per_sample_method="per_layer" if clipping == "materialize"
                 else None)
    text = format_summary(t)
    assert "DP overhead jax: dp_bk 11.0 ms / sgd 10.0 ms = 1.10x (unpaired) (clipping: bk)" in text
    assert "DP overhead jax: jax_privacy 30.0 ms / sgd 10.0 ms = 3.00x (unpaired) (clipping: jax_privacy)" in text
    assert "best private step jax: dp_bk, x sgd = 1.10x (unpaired), peak memory 1.20x sgd's" in text
