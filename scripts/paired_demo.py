"""Paired against unpaired timing of two identical targets while the machine's load changes.

Target: one framework's non-private ``sgd`` step (``compare.benchmark.targets``), built twice as A and B, so the
true ratio B/A is 1. Halfway, one CPU-bound background process (a Python busy loop) starts.
  unpaired (the protocol before pairing): A timed in its own point process (``compare.benchmark.point``), then the
           load starts, then B in a second process; ratio = median B / median A, its interval a bootstrap that
           resamples each side's calls independently.
  paired   (``compare.benchmark.paired``): A and B in this process, compiled and warmed up, then interleaved
           rounds in shuffled order; the load starts before the middle round; ratio = median per-round B/A with
           a bootstrap 95% interval.

  python scripts/paired_demo.py --model mnist_cnn --batch-size 64 --out paper/paired-demo

Writes OUT/demo.json (every call and round, the ratios, CPU model, versions, commit) and OUT/summary.txt.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from compare.benchmark.config import MALLOC_ENV
from compare.benchmark.paired import calls_per_slot, interleave, paired_ratio
from compare.benchmark.point import PointSpec, run_point
from compare.benchmark.results import _git_commit, cpu_model
from compare.lock import versions
from compare.spec import DEFAULT_LOSS
from compare.weights import init_weights, save_weights

BUSY = "import time\nt = time.time()\nwhile time.time() - t < {seconds}:\n    pass\n"


def start_load(seconds: float) -> subprocess.Popen:
    """One CPU-bound process (a busy loop) that ends by itself after ``seconds``."""
    return subprocess.Popen([sys.executable, "-c", BUSY.format(seconds=seconds)])


def _independent_ratio(num: list[float], den: list[float], seed: int = 0, n_boot: int = 2000) -> dict:
    """median(num) / median(den) and a bootstrap interval resampling each side on its own (unpaired)."""
    rng = np.random.default_rng(seed)
    a, b = np.asarray(num), np.asarray(den)
    boots = [np.median(rng.choice(a, a.size)) / np.median(rng.choice(b, b.size)) for _ in range(n_boot)]
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"median": float(np.median(a) / np.median(b)), "ci95": [float(lo), float(hi)]}


def unpaired(spec: PointSpec, env: dict, load_s: float) -> dict:
    """A in its own process (idle), then the load, then B in its own process."""
    a = run_point(spec, env=env, timeout=600)
    load = start_load(load_s)
    try:
        time.sleep(1.0)  # the load is running before B's process starts
        b = run_point(spec, env=env, timeout=600)
    finally:
        load.kill()
        load.wait()
    for r in (a, b):
        if r["status"] != "ok":
            raise SystemExit(f"unpaired point failed: {r['status']}: {r['reason']}")
    return {"a_times_ms": a["times_ms"], "b_times_ms": b["times_ms"],
            "ratio_b_over_a": _independent_ratio(b["times_ms"], a["times_ms"])}


def paired(spec: PointSpec, rounds: int, load_s: float, seed: int) -> dict:
    """A and B built apart, warmed up, then interleaved; the load starts before round ``rounds // 2``."""
    from compare.benchmark.targets import measure, prepare, sync_fn
    from compare.weights import load_weights

    weights = load_weights(spec.weights, model=spec.model)
    slots, calls = {}, {}
    for name in ("A", "B"):
        fn, args = prepare(spec.framework, spec.kind, spec.method, weights, spec.batch_size, dtype=spec.dtype,
                           device=spec.device, loss=spec.loss, model=spec.model)
        sync = sync_fn(spec.framework, spec.device)
        warm = measure(fn, args, sync, min_repeats=5, min_seconds=0.0, warmup=2)
        slots[name] = (lambda fn=fn, args=args, sync=sync: sync(fn(*args)))
        calls[name] = calls_per_slot(warm.min_ms)
    calls = dict.fromkeys(calls, max(calls.values()))  # the same slot length for both
    load: list[subprocess.Popen] = []

    def before_round(i: int) -> None:
        if i == rounds // 2:
            load.append(start_load(load_s))
            time.sleep(1.0)

    try:
        res = interleave(slots, calls, rounds=rounds, min_seconds=0.0, seed=seed, before_round=before_round)
    finally:
        for p in load:
            p.kill()
            p.wait()
    r = paired_ratio(res.rounds_ms["B"], res.rounds_ms["A"])
    return {"a_rounds_ms": res.rounds_ms["A"], "b_rounds_ms": res.rounds_ms["B"], "orders": res.orders,
            "calls_per_round": calls, "load_started_before_round": rounds // 2,
            "ratio_b_over_a": r.to_json(), "loadavg_max": res.loadavg_max}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--framework", default="torch", choices=("torch", "jax"))
    p.add_argument("--model", default="mnist_cnn")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=60)
    p.add_argument("--min-seconds", type=float, default=3.0, help="timed seconds of each unpaired point")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("results/paired-demo"))
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="paired-demo-") as tmp:
        weights = Path(tmp) / "w.safetensors"
        save_weights(weights, init_weights(0, model=a.model), model=a.model)
        spec = PointSpec(framework=a.framework, kind="dp", method="sgd", batch_size=a.batch_size, dtype="float32",
                         device="cpu", loss=DEFAULT_LOSS, weights=str(weights), model=a.model, min_repeats=5,
                         min_seconds=a.min_seconds)
        env = {**os.environ, **MALLOC_ENV["nonreleasing"]}
        env["PYTHONPATH"] = os.pathsep.join(x for x in (str(Path(__file__).resolve().parents[1]),
                                                         env.get("PYTHONPATH", "")) if x)
        load_before = os.getloadavg()[0]
        t0 = time.time()
        up = unpaired(spec, env, load_s=a.min_seconds * 20)
        pa = paired(spec, a.rounds, load_s=600.0, seed=a.seed)
    from compare.provenance import command_line, provenance

    out = {"meta": provenance(command_line(argv, "python scripts/paired_demo.py")),
           "target": f"{a.framework} sgd step, {a.model}, B={a.batch_size}, float32, cpu (A and B identical)",
           "background": "one CPU-bound process (Python busy loop) started halfway",
           "cpu": cpu_model(), "cores": len(os.sched_getaffinity(0)), "versions": versions(),
           "git_commit": _git_commit(), "command": " ".join(["python scripts/paired_demo.py", *(argv or sys.argv[1:])]),
           "loadavg_1m_before": load_before, "wall_s": time.time() - t0, "unpaired": up, "paired": pa}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "demo.json").write_text(json.dumps(out, indent=1))
    text = summary(out)
    (a.out / "summary.txt").write_text(text + "\n")
    print(text)
    return 0


def summary(d: dict) -> str:
    up, pa = d["unpaired"]["ratio_b_over_a"], d["paired"]["ratio_b_over_a"]

    def line(name: str, r: dict, n: str) -> str:
        lo, hi = r["ci95"]
        inside = "contains 1.0" if lo <= 1.0 <= hi else "does NOT contain 1.0"
        return (f"{name:<9} B/A = {r['median']:.3f}  95% interval [{lo:.3f}, {hi:.3f}]  width +-"
                f"{(hi - lo) / 2 / r['median']:.1%}  {inside}  ({n})")

    v = d["versions"]
    return "\n".join([
        f"{d['target']}; {d['background']}",
        f"{d['cpu']}, {d['cores']} cores; torch {v.get('torch')}, jax {v.get('jax')}; commit {d['git_commit']}",
        line("unpaired", up, f"{len(d['unpaired']['a_times_ms'])} + {len(d['unpaired']['b_times_ms'])} calls, "
                             "two processes"),
        line("paired", pa, f"{pa['rounds']} interleaved rounds, one process"),
    ])


if __name__ == "__main__":
    sys.exit(main())
