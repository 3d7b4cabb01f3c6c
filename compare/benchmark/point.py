"""Measurement points (framework, kind, method, batch size, dtype) in their own processes.

``python -m compare.benchmark.point --spec JSON --result PATH`` imports only its framework, times the point with
``compare.benchmark.targets.measure`` and writes one timing record (``compare.benchmark.results.TIMING_FIELDS`` +
extras) to PATH. ``run_point`` is the parent side: it starts that process with a given environment and timeout
and turns whatever happens (a record, an out-of-memory kill, a crash, a timeout) into a record; it never raises
for a failing point, so a sweep goes on.

Grouped points (``--specs JSON-LIST --result PATH``, parent side ``run_group``): one process measures several
points of one (framework, kind, method) in order, batch sizes ascending, appending each record to PATH as soon
as it is measured. Why: on a GPU a process pays its imports and the CUDA context (seconds) before the first
point; that start-up is measured in every record (``startup``: interpreter, imports, device initialisation) and
paid once per group. What isolation is lost and kept: torch's allocator peak is reset before every point
(``reset_peak_memory_stats``), so its ``gpu_peak_bytes`` is the point's own; XLA's ``peak_bytes_in_use`` cannot
be reset, so a JAX point's peak is the maximum over its group's points so far (``gpu_peak_cumulative``): with
batch sizes ascending and memory growing with B it is the point's own peak, which the delta against the
point's baseline then measures. Compiled executables of earlier batch sizes stay cached (they hold no
activations). Host RSS peaks are reset per point as before. A point that fails ends its process when it ran
out of memory or time (larger batches are not tried); after any other failure the group goes on in a fresh
process.
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
from typing import Iterator

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
    model: str = "seed_cnn"  # a compare.spec.MODELS name; the weights file is that workload's
    min_repeats: int = 5
    min_seconds: float = 1.0
    warmup: int = 1

    def key(self) -> tuple:
        return point_key(asdict(self))

    def label(self) -> str:
        model = "" if self.model == "seed_cnn" else f"{self.model} "
        return f"{model}{self.framework}/{self.method} B={self.batch_size} {self.dtype}"


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
    if isinstance(err, ModuleNotFoundError):  # a peer's library is not installed here: not a failure of the method
        return "skipped"
    if isinstance(err, MemoryError) or "OutOfMemoryError" in text or "RESOURCE_EXHAUSTED" in text:
        return "oom"
    return "error"


def _init_device(framework: str, device: str) -> None:
    """Create the framework's context on ``device`` (the CUDA context on a GPU) and wait for it."""
    from compare.frameworks import side

    dev = side(framework).resolve_device(device)
    if framework == "torch":
        import torch

        torch.zeros(1, device=dev).add_(1)
        if dev.type == "cuda":
            torch.cuda.synchronize()
    else:
        import jax

        jax.block_until_ready(jax.device_put(1.0, dev) + 1)


def start_up(framework: str, device: str, launched_at: float | None = None) -> dict:
    """Imports and device initialisation of a point process, timed (seconds): what every fresh process pays
    before its first measurement. ``python_s``: from the parent's launch (``time.time()``) to this call."""
    from compare.frameworks import side

    t0 = time.time()
    python_s = None if launched_at is None else t0 - launched_at
    side(framework).METHODS  # the imports belong to the baseline, not to the peak
    t1 = time.time()
    _init_device(framework, device)
    t2 = time.time()
    return {"python_s": python_s, "import_s": t1 - t0, "device_init_s": t2 - t1,
            "total_s": (t2 - launched_at) if launched_at is not None else t2 - t0}


def measure_point(spec: PointSpec, startup: dict | None = None, index_in_process: int = 0) -> dict:
    """Run in THIS process (a point subprocess); returns a complete timing record.

    ``startup``: this process's ``start_up`` timings (measured here when None); ``index_in_process``: how many
    points this process measured before (0 for a fresh process).
    """
    from compare.benchmark.targets import measure, prepare, sync_fn
    from compare.weights import load_weights

    t0 = time.perf_counter()
    record = failure_record(asdict(spec), "error", "")
    try:
        startup = startup or start_up(spec.framework, spec.device)
    except Exception as err:  # e.g. DeviceError: no GPU
        record.update(status=_classify(err), reason=f"{type(err).__name__}: {err}"[:2000],
                      wall_s=time.perf_counter() - t0)
        return record
    weights = load_weights(spec.weights, model=spec.model)
    try:
        fn, args = prepare(spec.framework, spec.kind, spec.method, weights, spec.batch_size, dtype=spec.dtype,
                           device=spec.device, loss=spec.loss, chunk_size=spec.chunk_size, seed=spec.seed,
                           model=spec.model)
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
                      peak_mem_bytes=gpu_delta if on_gpu else rss_delta,
                      gpu_peak_cumulative=on_gpu and spec.framework == "jax" and index_in_process > 0)
        if on_gpu and spec.framework == "torch":
            record["precision"] = _torch_precision()
        record["times_ms"] = list(timing.times_ms)
    except Exception as err:  # a failing point is data: record it, the sweep goes on
        log.error("point %s failed:\n%s", spec.label(), traceback.format_exc())
        record.update(status=_classify(err), reason=f"{type(err).__name__}: {err}"[:2000])
    record.update(threads=_thread_counts(), wall_s=time.perf_counter() - t0, startup=startup,
                  index_in_process=index_in_process)
    return record


def _torch_precision() -> dict:
    from compare.frameworks import side

    return side("torch").precision_flags()


def run_point(spec: PointSpec, *, env: dict[str, str], timeout: float) -> dict:
    """Measure ``spec`` in a fresh ``python -m compare.benchmark.point`` process (argument list, no shell)."""
    load = os.getloadavg()[0]  # a busy machine invalidates timings: keep the evidence with the point
    record = _run_subprocess(spec, env, timeout)
    record["loadavg_1m_before"] = load
    return record


def _command(result: Path, **spec_args: str) -> list[str]:
    cmd = [sys.executable, "-m", "compare.benchmark.point", "--result", str(result), "--launched-at", repr(time.time())]
    for flag, value in spec_args.items():
        cmd += [f"--{flag}", value]
    return cmd


def _exit_failure(spec: PointSpec, returncode: int, stderr: str, wall_s: float) -> dict:
    tail = "\n".join(stderr.strip().splitlines()[-5:])
    if returncode == -9:
        status, reason = "oom", "killed by SIGKILL (most likely the kernel's out-of-memory killer)"
    else:
        status, reason = "error", f"exit code {returncode}: {tail}"
    return failure_record(asdict(spec), status, reason, wall_s=wall_s)


def _run_subprocess(spec: PointSpec, env: dict[str, str], timeout: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="point-") as tmp:
        result = Path(tmp) / "record.json"
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(_command(result, spec=json.dumps(asdict(spec))), env=env, timeout=timeout,
                                  capture_output=True, text=True)
        except subprocess.TimeoutExpired:
            return failure_record(asdict(spec), "timeout", f"no result within {timeout:g} s (process killed)",
                                  wall_s=time.perf_counter() - t0)
        if result.is_file():
            return json.loads(result.read_text())
        return _exit_failure(spec, proc.returncode, proc.stderr, time.perf_counter() - t0)


# After these, the same method's larger batches are not tried (in a group's process and in compare.benchmark.sweep):
# out of memory or time only gets worse with B, and a missing library (skipped) stays missing.
GIVE_UP = ("oom", "timeout", "skipped")


def run_group(specs: list[PointSpec], *, env: dict[str, str], timeout: float,
              poll_s: float = 0.05) -> Iterator[dict]:
    """Measure ``specs`` (one (framework, kind, method), batch sizes ascending) in one process; yields one record
    per spec as soon as it exists, in order. ``timeout`` applies to each point (the first one's includes the
    process start-up). After an oom or timeout the process ends and the remaining specs are not yielded (the
    caller records them as skipped); after another failure a fresh process takes the rest."""
    rest = list(specs)
    while rest:
        resume_at = yield from _one_group_process(rest, env, timeout, poll_s)
        rest = rest[resume_at:] if resume_at is not None else []


def _one_group_process(specs: list[PointSpec], env: dict[str, str], timeout: float,
                       poll_s: float) -> Iterator[dict]:
    """Yields the records of one worker process; returns the index of the first spec a fresh process should take
    (after a failure that is not oom/timeout), or None (all done, or given up after oom/timeout)."""
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="group-") as tmp:
        result, log_path = Path(tmp) / "records.jsonl", Path(tmp) / "stderr.txt"
        with open(log_path, "w") as err_fh:
            proc = subprocess.Popen(_command(result, specs=json.dumps([asdict(s) for s in specs])), env=env,
                                    stdout=subprocess.DEVNULL, stderr=err_fh, text=True)
            done, t0 = 0, time.perf_counter()
            try:
                while done < len(specs):
                    records = _read_records(result)
                    for record in records[done:]:
                        record["loadavg_1m_before"] = load
                        yield record
                        done += 1
                        t0, load = time.perf_counter(), os.getloadavg()[0]
                        if record["status"] in GIVE_UP:
                            return None
                        if record["status"] != "ok":  # the worker stops after any failure
                            return done if done < len(specs) else None
                    if done >= len(specs):
                        break
                    if proc.poll() is not None and len(_read_records(result)) == done:
                        yield _exit_failure(specs[done], proc.returncode, log_path.read_text(),
                                            time.perf_counter() - t0)
                        return done + 1 if proc.returncode != -9 and done + 1 < len(specs) else None
                    if time.perf_counter() - t0 > timeout:
                        proc.kill()
                        proc.wait()
                        yield failure_record(asdict(specs[done]), "timeout",
                                             f"no result within {timeout:g} s (process killed)", wall_s=timeout)
                        return None
                    time.sleep(poll_s)
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
    return None


def _read_records(path: Path) -> list[dict]:
    """Complete lines only (a line being written has no newline yet)."""
    if not path.is_file():
        return []
    text = path.read_text()
    return [json.loads(line) for line in text[:text.rfind("\n") + 1].splitlines() if line]


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m compare.benchmark.point", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--spec", help="one PointSpec as JSON: its record is written to --result")
    what.add_argument("--specs", help="a JSON list of PointSpecs of one framework, measured in order in this "
                      "process: one JSON line per record appended to --result")
    p.add_argument("--result", required=True, type=Path, help="where to write the record(s)")
    p.add_argument("--launched-at", type=float, help="the parent's time.time() at launch (start-up timing)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if a.spec is not None:
        spec = PointSpec(**json.loads(a.spec))
        _write_atomic(a.result, json.dumps(measure_point(spec, _safe_start_up(spec, a.launched_at))))
        return 0
    specs = [PointSpec(**d) for d in json.loads(a.specs)]
    if len({s.framework for s in specs}) > 1:
        p.error("--specs: one framework per process")
    startup = _safe_start_up(specs[0], a.launched_at)
    for i, spec in enumerate(specs):
        record = measure_point(spec, startup, index_in_process=i)
        with open(a.result, "a") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
        if record["status"] != "ok":
            return 0  # the parent decides what comes next (skip the larger batches, or a fresh process)
    return 0


def _safe_start_up(spec: PointSpec, launched_at: float | None) -> dict | None:
    """``start_up`` timings, or None when it fails (``measure_point`` then records the error)."""
    try:
        return start_up(spec.framework, spec.device, launched_at)
    except Exception:  # noqa: BLE001 - recorded by measure_point's own attempt
        return None


if __name__ == "__main__":
    sys.exit(main())
