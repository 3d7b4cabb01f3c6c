"""Time one method in two checkouts of this repository, alternating, to show a refactoring changed no speed.

Each round runs a fresh process per checkout (order shuffled per round) that builds the method through the
side's interface (``compare.frameworks.side``: ``native_fn`` / ``make_step``) from that checkout's code, warms it up and reports
the median of ``--calls`` timed calls. The ratio new / old is taken per round (both processes of a round share the
machine's state), and reported as the median over rounds with its bootstrap 95% interval
(``compare.benchmark.paired.paired_ratio``) and its min and max. Fresh processes differ by up to +-20% from one
another (memory layout, scheduling), so a row needs ~10 rounds before its interval can rule out a 5% change.

  python scripts/before_after.py OLD_CHECKOUT NEW_CHECKOUT --models seed_cnn,mnist_cnn,embed \
      --batch-sizes 64,256 --methods per_layer,dp_bk --rounds 5 --out paper/cpu-contract-before-after
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from compare.benchmark.paired import paired_ratio  # noqa: E402

CHILD = r"""
import json, sys, time, statistics
import numpy as np
framework, model, bsz, method, calls = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
from compare import frameworks
from compare.spec import make_batch
from compare.weights import init_weights
if hasattr(frameworks, "side"):
    ps = dp = frameworks.side(framework)
else:  # a checkout whose harness has no side interface: its mirrored modules by name
    ps, dp = (frameworks.impl_module(framework, m) for m in ("per_sample", "dp"))
x, y = make_batch(bsz, seed=0, model=model)
w = init_weights(0, model)
params, xn, yn = ps.native_inputs(w, x, y, dtype="float32", device="cpu", model=model)
if method.startswith("dp_"):
    step = dp.make_step(lr=0.1, clip=1.0, noise_multiplier=0.0, loss="nll_log_softmax", model=model,
                        per_sample_method="per_layer", clipping=method[3:])
    fn = lambda: step(params, xn, yn, None)
    sync = dp.block_until_ready
else:
    f = ps.native_fn(method, loss="nll_log_softmax", model=model)
    fn = lambda: f(params, xn, yn)
    if framework == "jax":
        import jax
        sync = jax.block_until_ready
    else:
        sync = lambda v: v
for _ in range(3):
    sync(fn())
times = []
for _ in range(calls):
    t = time.perf_counter(); sync(fn()); times.append(1e3 * (time.perf_counter() - t))
print(json.dumps({"median_ms": statistics.median(times)}))
"""


def one(checkout: Path, framework: str, model: str, bsz: int, method: str, calls: int) -> float:
    out = subprocess.run([sys.executable, "-c", CHILD, framework, model, str(bsz), method, str(calls)],
                         cwd=checkout, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(checkout), "PATH": "/usr/bin:/bin", "MALLOC_MMAP_MAX_": "0",
                              "MALLOC_TRIM_THRESHOLD_": str(2**62), "JAX_PLATFORMS": "cpu"})
    return json.loads(out.stdout.strip().splitlines()[-1])["median_ms"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("old", type=Path)
    p.add_argument("new", type=Path)
    p.add_argument("--models", default="seed_cnn,mnist_cnn,embed")
    p.add_argument("--frameworks", default="torch,jax")
    p.add_argument("--batch-sizes", default="64,256")
    p.add_argument("--methods", default="per_layer,dp_bk")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--calls", type=int, default=10)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--file", default="before_after.json", help="file name under --out (default %(default)s)")
    a = p.parse_args(argv)
    rng = random.Random(0)
    commits = {k: subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=c, capture_output=True, text=True
                                 ).stdout.strip() for k, c in (("old", a.old), ("new", a.new))}
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    a.out.mkdir(parents=True, exist_ok=True)
    rows = []

    def save() -> None:
        """The file after every row (temp file + rename): an interrupted run keeps every finished row."""
        tmp = a.out / (a.file + ".tmp")
        tmp.write_text(json.dumps(
            {"command": " ".join(["python", "scripts/before_after.py", *(argv or sys.argv[1:])]),
             "commits": commits, "cpu": cpu, "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
             "rows": rows}, indent=1))
        os.replace(tmp, a.out / a.file)

    for model in a.models.split(","):
        for fw in a.frameworks.split(","):
            for bsz in map(int, a.batch_sizes.split(",")):
                for method in a.methods.split(","):
                    rounds = []
                    for _ in range(a.rounds):
                        order = ["old", "new"]
                        rng.shuffle(order)
                        ms = {k: one(a.old if k == "old" else a.new, fw, model, bsz, method, a.calls) for k in order}
                        rounds.append({**ms, "load_1min": os.getloadavg()[0]})
                    ratios = [r["new"] / r["old"] for r in rounds]
                    ci = paired_ratio([r["new"] for r in rounds], [r["old"] for r in rounds])
                    row = {"model": model, "framework": fw, "batch_size": bsz, "method": method, "rounds": rounds,
                           "ratio_median": statistics.median(ratios), "ratio_ci95": [ci.lo, ci.hi],
                           "ratio_min": min(ratios),
                           "ratio_max": max(ratios)}
                    rows.append(row)
                    save()
                    print(f"{model:10s} {fw:5s} B={bsz:<4d} {method:10s} new/old {row['ratio_median']:.3f} "
                          f"95% [{ci.lo:.3f}, {ci.hi:.3f}] range [{row['ratio_min']:.3f}, {row['ratio_max']:.3f}]",
                          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
