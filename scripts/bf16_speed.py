"""bfloat16 against float32 on this machine, every per-sample method and private step, timed as pairs.

For each (workload, framework, kind, method) both dtypes are built by ``compare.benchmark.targets.prepare``
(exactly what ``compare.run`` times) and warmed up; then, round by round in one process, float32 and bfloat16
run back to back (the order alternating from round to round, so a drift in the machine's load falls on both; a short call is
repeated within a sample until it lasts ~0.1 s, the same count for both dtypes).
The result is the median per-round ratio bfloat16 / float32 with a bootstrap 90% interval (a ratio is measured
as a pair: on a shared machine the absolute times move, the paired ratio much less). Records the CPU, its
bfloat16 support (``/proc/cpuinfo`` flags avx512_bf16, amx_bf16, amx_tile), the threads, the load, versions,
the commit and the command; DIR/speed.json is rewritten after every row (a stop keeps what was measured).
Usage:
  python scripts/bf16_speed.py --model seed_cnn,mnist_cnn,embed --batch-size 64 --threads 1 --out paper/cpu-bf16
  python scripts/bf16_speed.py --combine A/speed.json B/speed.json --out DIR   # runs of several workloads, one table
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SKIP = {"compile": "~90 s of torch.compile per dtype and shape on CPU", "compile_cudagraphs": "cuda only"}
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile", "avx512f", "avx2")
SLOW_CALL_S = 3.0  # a warm call slower than this gets ``--slow-rounds`` rounds (the Python loops)
MIN_SAMPLE_S = 0.1  # one timed sample repeats a short call until it lasts about this long


def cpu_info() -> dict:
    """Model name, logical CPUs, and which bfloat16-relevant instruction-set flags /proc/cpuinfo lists."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    lines = text.splitlines()
    model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "unknown")
    flags = set(next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), []))
    return {"model": model, "cpus": os.cpu_count(), "flags": {f: f in flags for f in BF16_FLAGS}}


def set_threads(threads: int | None) -> None:
    """Intra-op threads of both frameworks (None: their defaults). JAX's are fixed through XLA_FLAGS, so this runs
    before anything imports JAX."""
    if threads is None:
        return
    if threads != 1:
        raise SystemExit("--threads: JAX's thread count can be left alone or set to 1")
    if "jax" in sys.modules:
        raise RuntimeError("set JAX's threads before importing it")
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false "
                               "intra_op_parallelism_threads=1").strip()
    import torch

    torch.set_num_threads(1)


def pair(framework: str, kind: str, method: str, model: str, batch: int, rounds: int, slow_rounds: int) -> dict:
    from compare.benchmark.targets import prepare, sync_fn
    from compare.weights import init_weights

    weights = init_weights(0, model)
    sync = sync_fn(framework, "cpu")
    calls, warm = {}, {}
    for dtype in ("float32", "bfloat16"):
        fn, args = prepare(framework, kind, method, weights, batch, dtype=dtype, device="cpu",
                           loss="nll_log_softmax", model=model)
        sync(fn(*args))  # compile
        t0 = time.perf_counter()
        sync(fn(*args))  # warm
        warm[dtype] = time.perf_counter() - t0
        calls[dtype] = (fn, args)
    n = slow_rounds if max(warm.values()) > SLOW_CALL_S else rounds
    reps = max(1, int(MIN_SAMPLE_S / max(min(warm.values()), 1e-6)))  # same count for both dtypes
    times: dict[str, list[float]] = {"float32": [], "bfloat16": []}
    for r in range(n):
        for dtype in (("float32", "bfloat16") if r % 2 == 0 else ("bfloat16", "float32")):
            fn, args = calls[dtype]
            t0 = time.perf_counter()
            for _ in range(reps):
                sync(fn(*args))
            times[dtype].append((time.perf_counter() - t0) * 1e3 / reps)
    ratios = np.array(times["bfloat16"]) / np.array(times["float32"])
    rng = np.random.default_rng(0)
    boot = [np.median(rng.choice(ratios, ratios.size)) for _ in range(2000)]
    return {"model": model, "framework": framework, "kind": kind, "method": method, "batch_size": batch,
            "rounds": n, "calls_per_sample": reps, "float32_ms": statistics.median(times["float32"]),
            "bfloat16_ms": statistics.median(times["bfloat16"]), "ratio": float(np.median(ratios)),
            "ratio_90": [float(np.percentile(boot, 5)), float(np.percentile(boot, 95))],
            "ratios": [float(v) for v in ratios], "loadavg_after": os.getloadavg()[0]}


def markdown(runs: list[dict], rows: list[dict]) -> str:
    meta = runs[0]
    flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in meta["cpu"]["flags"].items())
    lines = [f"# bfloat16 / float32 step time, B={meta['batch_size']}, {meta['threads']} thread(s) "
             f"({meta['cpu']['model']}, {meta['cpu']['cpus']} CPUs)", "",
             f"CPU flags: {flags}; {', '.join(f'{k} {v}' for k, v in meta['versions'].items() if v)}.", ""]
    for m in runs:
        lines.append(f"- `{m['command']}` at {m['commit']} ({', '.join(m['models'])}): malloc "
                     f"{m['malloc_env'] or 'default'}; load average {m['load_average'][0]:.1f} at the start.")
    lines += ["",
             "float32 and bfloat16 alternate call by call in one process; bf16/f32 is the median of the per-round "
             "ratios, with a bootstrap 90% interval. Absolute ms are medians on a shared machine (noisy); the paired "
             "ratios are the result.", "",
             "| model | framework | kind | method | float32 ms | bfloat16 ms | bf16/f32 | 90% interval | rounds |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        head = f"| {r['model']} | {r['framework']} | {r['kind']} | {r['method']} |"
        if "ratio" in r:
            lines.append(f"{head} {r['float32_ms']:.1f} | {r['bfloat16_ms']:.1f} | {r['ratio']:.2f} | "
                         f"{r['ratio_90'][0]:.2f}-{r['ratio_90'][1]:.2f} | {r['rounds']} |")
        else:
            lines.append(f"{head} {r.get('skipped') or r.get('failed')} |||||")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="seed_cnn", help="NAME[,NAME...]")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--slow-rounds", type=int, default=3, help=f"rounds for a call slower than {SLOW_CALL_S} s")
    p.add_argument("--threads", type=int, help="intra-op threads of both frameworks: 1 (default: their own)")
    p.add_argument("--methods", help="only these methods (comma-separated; default: every one)")
    p.add_argument("--out", type=Path, default=Path("results/bf16"))
    p.add_argument("--combine", type=Path, nargs="+", help="write one table of these speed.json files to --out")
    a = p.parse_args(argv)
    if a.combine:
        missing = [str(f) for f in a.combine if not f.exists()]
        if missing:
            p.error(f"--combine: no such file: {', '.join(missing)}")
        parts = [json.loads(f.read_text()) for f in a.combine]
        runs = []
        for d in parts:  # a run stopped early measured fewer workloads than it was asked for
            for m in (d["runs"] if "runs" in d else [d["meta"]]):
                runs.append({**m, "models": [x for x in m["models"] if any(r["model"] == x for r in d["rows"])]})
        rows = [r for d in parts for r in d["rows"]]
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "speed.json").write_text(json.dumps({"runs": runs, "rows": rows}, indent=1))
        (a.out / "speed.md").write_text(markdown(runs, rows))
        return 0
    from compare.spec import InputError, parse_models  # contract only: no framework imported yet

    try:
        models = parse_models(a.model)
    except InputError as err:
        p.error(str(err))
    if a.batch_size < 1 or a.rounds < 1 or a.slow_rounds < 1:
        p.error("--batch-size, --rounds and --slow-rounds must be positive")
    set_threads(a.threads)
    from compare.benchmark.targets import TARGETS, not_applicable
    from compare.frameworks import FRAMEWORKS
    from compare.lock import versions

    only = set(a.methods.split(",")) if a.methods else None
    from compare.provenance import command_line, provenance

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    meta = {**provenance(command_line(argv, "python scripts/bf16_speed.py")), "commit": commit, "cpu": cpu_info(), "versions": versions(), "load_average": os.getloadavg(),
            "models": list(models), "batch_size": a.batch_size, "rounds": a.rounds, "slow_rounds": a.slow_rounds,
            "threads": a.threads or "framework defaults", "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}}
    a.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for model in models:
        for fw in FRAMEWORKS:
            for kind in ("reference", "per_sample", "dp"):
                for method in TARGETS[kind].methods(fw):
                    if only is not None and method not in only:
                        continue
                    base = {"model": model, "framework": fw, "kind": kind, "method": method}
                    why = SKIP.get(method) or not_applicable(fw, kind, method, model)
                    if why is not None:
                        rows.append({**base, "skipped": why})
                        continue
                    try:
                        rows.append(pair(fw, kind, method, model, a.batch_size, a.rounds, a.slow_rounds))
                    except Exception as err:  # recorded, not dropped
                        rows.append({**base, "failed": f"{type(err).__name__}: {err}"})
                    print(json.dumps({k: v for k, v in rows[-1].items() if k != "ratios"}), flush=True)
                    (a.out / "speed.json").write_text(json.dumps({"runs": [meta], "rows": rows}, indent=1))
                    (a.out / "speed.md").write_text(markdown([meta], rows))
    print(markdown([meta], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
