"""The timing protocol (compare.bench), the floor (compare.floor) and the summary table (compare.summary)."""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from compare.bench import TARGETS, measure, prepare, sync_fn
from compare.floor import add_floors, floor_ms, measure_write_bandwidth
from compare.frameworks import FRAMEWORKS, per_sample_module
from compare.results import failure_record
from compare.spec import NUM_PARAMS
from compare.summary import format_summary


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


def test_prepare_rejects_unknown_kind_and_method(weights):
    with pytest.raises(ValueError, match="unknown kind 'dp_step'"):
        prepare("torch", "dp_step", "vmap", weights, 2, dtype="float32", device="cpu", loss="nll_log_softmax")
    with pytest.raises(ValueError, match="unknown per_sample method 'nope' for jax"):
        prepare("jax", "per_sample", "nope", weights, 2, dtype="float32", device="cpu", loss="nll_log_softmax")
    with pytest.raises(ValueError, match="unknown reference method 'vmap'"):
        prepare("jax", "reference", "vmap", weights, 2, dtype="float32", device="cpu", loss="nll_log_softmax")
    with pytest.raises(ValueError, match="unknown framework"):
        sync_fn("tensorflow", "cpu")


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_prepared_reference_is_the_gradient_of_the_mean_loss(framework, weights):
    """The timed reference computes what ordinary training does: its result has no per-sample axis."""
    fn, args = prepare(framework, "reference", "batched", weights, 3, dtype="float64", device="cpu",
                       loss="nll_log_softmax")
    grads = sync_fn(framework, "cpu")(fn(*args))
    assert sum(int(np.prod(g.shape)) for g in jax.tree.leaves(grads)) == NUM_PARAMS  # a dict or an nnx.State


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
