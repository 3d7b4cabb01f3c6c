"""One measurement point (framework, kind, method, batch size, dtype) in its own process.

``python -m compare.benchmark.point --spec JSON --result PATH`` imports only its framework, times the point with
``compare.benchmark.targets.measure`` and writes one timing record (``compare.benchmark.results.TIMING_FIELDS`` + extras) to PATH.
``run_point`` is the parent side: it starts that process with a given environment and timeout and turns
whatever happens (a record, an out-of-memory kill, a crash, a timeout) into a record; it never raises for a
failing point, so a sweep goes on.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

from compare.benchmark.results import failure_record, point_key

log = logging.getLogger("compare.benchmark.point")


@dataclass(frozen=True)
class PointSpec:
    framework: str
    kind: str
    method: str
    batch_size: int
    dtype: str
    device: str  # "cpu" or "cuda", resolved by the parent
    loss: str
    weights: str  # path of the shared safetensors file
    chunk_size: int | None = None
    seed: int = 0
    min_repeats: int = 5
    min_seconds: float = 1.0
    warmup: int = 1

    def key(self) -> tuple:
        return point_key(asdict(self))

    def label(self) -> str:
        return f"{self.framework}/{self.method} B={self.batch_size} {self.dtype}"


def _proc_status_bytes(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so the peak covers the measurement only."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _torch_gpu_memory(reset: bool = False) -> tuple[int, int]:
    import torch

    if reset:
        torch.cuda.reset_peak_memory_stats()
    return torch.cuda.memory_allocated(), torch.cuda.max_memory_allocated()


def _jax_gpu_memory(reset: bool = False) -> tuple[int, int]:
    """XLA's peak cannot be reset; harmless: nothing before the baseline allocates more than the timed calls."""
    import jax

    stats = jax.devices("gpu")[0].memory_stats()
    return stats["bytes_in_use"], stats["peak_bytes_in_use"]


# framework -> (reset) -> (bytes allocated now, allocator peak)
GPU_MEMORY = {"torch": _torch_gpu_memory, "jax": _jax_gpu_memory}


def _thread_counts() -> dict:
    counts = {"process_threads": len(os.listdir("/proc/self/task")), "cpu_count": os.cpu_count(),
              "affinity": len(os.sched_getaffinity(0))}
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        counts.update(torch_intra_op=torch.get_num_threads(), torch_inter_op=torch.get_num_interop_threads())
    return counts


def _classify(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}"
    if isinstance(err, MemoryError) or "OutOfMemoryError" in text or "RESOURCE_EXHAUSTED" in text:
        return "oom"
    return "error"


def measure_point(spec: PointSpec) -> dict:
    """Run in THIS process (the point subprocess); returns a complete timing record."""
    from compare.benchmark.targets import measure, prepare, sync_fn
    from compare.frameworks import per_sample_module
    from compare.weights import load_weights

    t0 = time.perf_counter()
    per_sample_module(spec.framework)  # the imports belong to the baseline, not to the peak
    weights = load_weights(spec.weights)
    record = failure_record(asdict(spec), "error", "")
    try:
        fn, args = prepare(spec.framework, spec.kind, spec.method, weights, spec.batch_size, dtype=spec.dtype,
                           device=spec.device, loss=spec.loss, chunk_size=spec.chunk_size, seed=spec.seed)
        sync = sync_fn(spec.framework, spec.device)
        on_gpu = spec.device.startswith("cuda")
        gpu_base = GPU_MEMORY[spec.framework](reset=True)[0] if on_gpu else 0
        have_hwm = _reset_peak_rss()
        baseline = _proc_status_bytes("VmRSS")
        timing = measure(fn, args, sync, min_repeats=spec.min_repeats, min_seconds=spec.min_seconds,
                         warmup=spec.warmup)
        peak_rss = _proc_status_bytes("VmHWM") if have_hwm else None
        rss_delta = None if peak_rss is None else peak_rss - baseline
        gpu_peak = GPU_MEMORY[spec.framework]()[1] if on_gpu else None
        gpu_delta = None if gpu_peak is None else gpu_peak - gpu_base
        record.update(asdict(timing), status="ok", reason="", baseline_rss_bytes=baseline, peak_rss_bytes=peak_rss,
                      peak_rss_delta_bytes=rss_delta, gpu_peak_bytes=gpu_peak, gpu_peak_delta_bytes=gpu_delta,
                      peak_mem_bytes=gpu_delta if on_gpu else rss_delta)
        record["times_ms"] = list(timing.times_ms)
    except Exception as err:  # a failing point is data: record it, the sweep goes on
        log.error("point %s failed:\n%s", spec.label(), traceback.format_exc())
        record.update(status=_classify(err), reason=f"{type(err).__name__}: {err}"[:2000])
    record.update(threads=_thread_counts(), wall_s=time.perf_counter() - t0)
    return record


def run_point(spec: PointSpec, *, env: dict[str, str], timeout: float) -> dict:
    """Measure ``spec`` in a fresh ``python -m compare.benchmark.point`` process (argument list, no shell)."""
    load = os.getloadavg()[0]  # a busy machine invalidates timings: keep the evidence with the point
    record = _run_subprocess(spec, env, timeout)
    record["loadavg_1m_before"] = load
    return record


def _run_subprocess(spec: PointSpec, env: dict[str, str], timeout: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="point-") as tmp:
        result = Path(tmp) / "record.json"
        cmd = [sys.executable, "-m", "compare.benchmark.point", "--spec", json.dumps(asdict(spec)), "--result", str(result)]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, env=env, timeout=timeout, capture_output=True, text=True)
        except subprocess.TimeoutExpired:
            return failure_record(asdict(spec), "timeout", f"no result within {timeout:g} s (process killed)",
                                  wall_s=time.perf_counter() - t0)
        if result.is_file():
            return json.loads(result.read_text())
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        if proc.returncode == -9:
            status, reason = "oom", "killed by SIGKILL (most likely the kernel's out-of-memory killer)"
        else:
            status, reason = "error", f"exit code {proc.returncode}: {tail}"
        return failure_record(asdict(spec), status, reason, wall_s=time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m compare.benchmark.point", description=__doc__)
    p.add_argument("--spec", required=True, help="PointSpec as JSON")
    p.add_argument("--result", required=True, type=Path, help="where to write the JSON record")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    spec = PointSpec(**json.loads(a.spec))
    record = measure_point(spec)
    tmp = a.result.with_name(a.result.name + ".tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, a.result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
