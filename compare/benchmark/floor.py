"""The floor of per-sample gradients: the batched reference plus writing the per-sample output once.

floor(framework, model, B) = that framework's batched reference median at B + B x P x itemsize / bandwidth
(P = the workload's parameter count, 1,199,882 for the seed CNN),
with bandwidth the best write bandwidth this machine reaches, measured in the same run.
CPU: the best of numpy ``fill`` (one thread) and torch ``fill_`` / ``zero_`` (intra-op threads) on a ~1 GB buffer
that is touched first, so page faults are not counted. GPU: the device-to-device bandwidth, the best of torch
``copy_`` between two 1 GiB cuda buffers (bytes read + bytes written per second, the usual figure of a device's
memory bandwidth) and ``fill_`` (bytes written), each the best of 20 launches timed with CUDA events. ``python -m compare.benchmark.floor --result PATH`` measures it in
its own process, with the same environment as the points.
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
from pathlib import Path
from typing import Callable

import numpy as np

from compare.spec import NUM_PARAMS, check_model

log = logging.getLogger("compare.benchmark.floor")

DEFAULT_NBYTES = 1 << 30


def _best_seconds(fill: Callable[[], None], repeats: int) -> float:
    fill()  # first touch: page faults and zeroing happen here, not in the timed fills
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fill()
        best = min(best, time.perf_counter() - t0)
    return best


def _best_cuda_seconds(kernel: Callable[[], object], repeats: int) -> float:
    """Best of ``repeats`` launches of ``kernel``, each timed with CUDA events (after one untimed launch)."""
    import torch

    kernel()
    best = float("inf")
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        kernel()
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end) / 1e3)
    return best


def measure_write_bandwidth(device: str = "cpu", nbytes: int = DEFAULT_NBYTES, repeats: int = 5) -> dict:
    """Best write bandwidth in bytes/s over a few fill kernels; every kernel's own figure is kept."""
    import torch

    n = nbytes // 4
    rates: dict[str, float] = {}
    if device.startswith("cuda"):
        src = torch.ones(n, dtype=torch.float32, device="cuda")
        dst = torch.empty(n, dtype=torch.float32, device="cuda")
        gpu_repeats = max(repeats, 20)  # a launch takes ~1 ms: 20 cost nothing and steady the best
        rates["torch_cuda_copy"] = 2 * nbytes / _best_cuda_seconds(lambda: dst.copy_(src), gpu_repeats)
        rates["torch_cuda_fill"] = nbytes / _best_cuda_seconds(lambda: dst.fill_(1.0), gpu_repeats)
        del src, dst
    else:
        arr = np.empty(n, dtype=np.float32)
        rates["numpy_fill"] = nbytes / _best_seconds(lambda: arr.fill(1.0), repeats)
        del arr
        buf = torch.empty(n, dtype=torch.float32)
        rates["torch_fill"] = nbytes / _best_seconds(lambda: buf.fill_(1.0), repeats)
        rates["torch_zero"] = nbytes / _best_seconds(lambda: buf.zero_(), repeats)
    best = max(rates, key=rates.get)
    return {"bytes_per_s": rates[best], "best_kernel": best, "kernels_bytes_per_s": rates, "nbytes": nbytes,
            "repeats": repeats, "device": device, "torch_threads": torch.get_num_threads()}


def floor_ms(reference_ms: float, batch_size: int, itemsize: int, bytes_per_s: float,
             num_params: int = NUM_PARAMS) -> float:
    """The reference plus writing B x ``num_params`` values once (default: the seed CNN's), in milliseconds."""
    return reference_ms + batch_size * num_params * itemsize / bytes_per_s * 1e3


def add_floors(timings: list[dict], bytes_per_s: float | None) -> list[dict]:
    """Set ``floor_ms`` and ``ratio_to_floor`` on every ok per-sample record that has an ok reference; a paired
    record keeps its median per-round ratio (``ratios["floor"]``, compare.benchmark.pair)."""
    def key(r: dict) -> tuple:
        return r.get("model") or "seed_cnn", r["framework"], r["batch_size"], r["dtype"], r["device"]

    refs = {key(r): r["median_ms"] for r in timings if r["kind"] == "reference" and r["status"] == "ok"}
    for r in timings:
        if r["kind"] != "per_sample":
            continue
        ref = refs.get(key(r))
        fl = None if ref is None or not bytes_per_s else floor_ms(
            ref, r["batch_size"], np.dtype(r["dtype"]).itemsize, bytes_per_s, check_model(key(r)[0]).num_params)
        r["floor_ms"] = fl
        paired = ((r.get("ratios") or {}).get("floor") or {}).get("median")  # compare.benchmark.pair's, per round
        r["ratio_to_floor"] = paired if paired is not None else (
            r["median_ms"] / fl if fl and r["status"] == "ok" else None)
    return timings


def run_floor(*, env: dict[str, str], device: str, timeout: float = 300.0) -> dict | None:
    """Measure the bandwidth in a fresh process; None (logged) when that fails, so the sweep goes on."""
    with tempfile.TemporaryDirectory(prefix="floor-") as tmp:
        result = Path(tmp) / "floor.json"
        cmd = [sys.executable, "-m", "compare.benchmark.floor", "--device", device, "--result", str(result)]
        try:
            proc = subprocess.run(cmd, env=env, timeout=timeout, capture_output=True, text=True)
        except subprocess.TimeoutExpired:
            log.error("write-bandwidth measurement timed out after %g s; no floor this run", timeout)
            return None
        if not result.is_file():
            log.error("write-bandwidth measurement failed (exit %d): %s", proc.returncode, proc.stderr[-1000:])
            return None
        return json.loads(result.read_text())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m compare.benchmark.floor", description=__doc__)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--nbytes", type=int, default=DEFAULT_NBYTES)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--result", type=Path, help="write the JSON here (default: print it)")
    a = p.parse_args(argv)
    out = measure_write_bandwidth(a.device, a.nbytes, a.repeats)
    text = json.dumps(out)
    if a.result is None:
        print(text)
    else:
        tmp = a.result.with_name(a.result.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, a.result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
