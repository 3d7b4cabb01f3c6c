"""Private steps against their own SGD step, timed as pairs: same process, interleaved rounds, shuffled order.

  MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1099511627776 \
    python scripts/paired_dp.py --framework torch --model embed --batch-sizes 64,256 --out paper/perf-embed/torch.json

Every step is built as the harness builds its ``dp`` points (``compare.benchmark.targets.prepare``: same weights,
batch, hyper-parameters, noise drawn outside the timed call), warmed up (JAX: compiled) first. Then ``--rounds``
rounds; each round calls every step once in a freshly shuffled order, synchronised, and the ratio of a private
step to ``sgd`` in that round is one sample. Reported: the median per-round ratio with a bootstrap 95% interval
(resampling rounds), the median times, and every round's times. On a shared machine absolute times drift with
the load; per-round ratios cancel most of it (both sides of a ratio see the same moment).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from compare.benchmark.results import cpu_model
from compare.benchmark.targets import prepare, sync_fn
from compare.env import memory_settings
from compare.spec import DEFAULT_LOSS, parse_models
from compare.weights import init_weights


def bootstrap_median(ratios: np.ndarray, *, draws: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(median, 2.5%, 97.5%) of the median per-round ratio, rounds resampled with replacement."""
    rng = np.random.default_rng(seed)
    meds = np.median(ratios[rng.integers(0, len(ratios), (draws, len(ratios)))], axis=1)
    return float(np.median(ratios)), float(np.quantile(meds, 0.025)), float(np.quantile(meds, 0.975))


def paired(steps: dict[str, tuple], sync, *, rounds: int, warmup: int, seed: int = 0) -> dict[str, list[float]]:
    """{name: [ms per round]}: every step once per round, in a shuffled order."""
    for fn, args in steps.values():
        for _ in range(warmup):
            sync(fn(*args))
    rng = np.random.default_rng(seed)
    names = list(steps)
    times: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(rounds):
        for i in rng.permutation(len(names)):
            fn, args = steps[names[i]]
            t0 = time.perf_counter()
            sync(fn(*args))
            times[names[i]].append((time.perf_counter() - t0) * 1e3)
    return times


def point(framework: str, model: str, batch: int, methods: list[str], *, rounds: int, warmup: int,
          dtype: str) -> dict:
    weights = init_weights(0, model=model)
    steps = {m: prepare(framework, "dp", m, weights, batch, dtype=dtype, device=None, loss=DEFAULT_LOSS,
                        model=model) for m in ["sgd", *methods]}
    times = paired(steps, sync_fn(framework, "cpu"), rounds=rounds, warmup=warmup)
    sgd = np.asarray(times["sgd"])
    row: dict = {"framework": framework, "model": model, "batch_size": batch, "dtype": dtype, "rounds": rounds,
                 "median_ms": {m: float(np.median(t)) for m, t in times.items()}, "times_ms": times, "ratio": {}}
    for m in methods:
        med, lo, hi = bootstrap_median(np.asarray(times[m]) / sgd)
        row["ratio"][m] = {"median": med, "ci95": [lo, hi]}
    return row


def set_threads(framework: str, threads: int | None) -> None:
    """Intra-op threads for ``framework`` (None: leave its default); JAX's must be set before it is imported."""
    if threads is None:
        return
    if framework == "torch":
        import torch

        torch.set_num_threads(threads)
    elif threads == 1:
        if "jax" in sys.modules:
            raise RuntimeError("set JAX's threads before importing it")
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false "
                                   "intra_op_parallelism_threads=1").strip()
    else:
        raise ValueError("JAX's thread count can be left alone or set to 1")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--framework", choices=("torch", "jax"), required=True)
    p.add_argument("--model", type=parse_models, default=("embed",))
    p.add_argument("--batch-sizes", default="64,256")
    p.add_argument("--methods", default="dp_bk", help="comma-separated private steps (dp_sgd, dp_ghost, dp_bk)")
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--threads", type=int, help="intra-op threads (default: the framework's own choice)")
    p.add_argument("--out", type=Path, help="append the records to this JSON file (created with its meta)")
    a = p.parse_args(argv)
    methods = a.methods.split(",")
    set_threads(a.framework, a.threads)
    records = []
    for model in a.model:
        for b in (int(s) for s in a.batch_sizes.split(",")):
            row = point(a.framework, model, b, methods, rounds=a.rounds, warmup=a.warmup, dtype=a.dtype)
            row["loadavg_after"] = os.getloadavg()
            row["threads"] = a.threads
            short = {m: f"{r['median']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]" for m, r in row["ratio"].items()}
            print(f"{a.framework} {model} B={b} sgd {row['median_ms']['sgd']:.1f} ms  {short}", flush=True)
            records.append(row)
    if a.out:
        from compare.provenance import command_line, provenance

        meta = {**provenance(command_line(argv, "python scripts/paired_dp.py")), "cpu": cpu_model(),
                "memory_env": memory_settings()}
        append_run(a.out, meta, records)


def append_run(out: Path, meta: dict, records: list[dict]) -> None:
    """Add one run ({"meta", "records"}) to the JSON file ``out`` ({"runs": [...]}), keeping the runs already there."""
    data = json.loads(out.read_text()) if out.exists() else {"runs": []}
    data["runs"].append({"meta": meta, "records": records})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1))


if __name__ == "__main__":
    main()
