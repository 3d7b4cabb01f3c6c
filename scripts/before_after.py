"""Time one method in two checkouts of this repository, alternating, to show a refactoring changed no speed.

Both modes build the method through the side's interface (``compare.frameworks.side``: ``native_fn`` /
``make_step``) from each checkout's own code and warm it up; the ratio new / old is taken per round and reported
as the median over rounds with its bootstrap 95% interval (``compare.benchmark.paired.paired_ratio``), min and max.

- ``--mode paired``: per row one process imports both checkouts in turn (each under its own module objects, kept
  side by side) and times them in interleaved rounds, order shuffled per round: the repository's paired protocol.
- ``--mode processes``: per round a fresh process per checkout. One round's ratio scatters widely on a shared
  2-core machine (the range column of paper/cpu-contract-before-after/before_after.md), so this mode needs many
  rounds to rule out a 5% change.

  python scripts/before_after.py OLD_CHECKOUT NEW_CHECKOUT --mode paired --models mnist_cnn,embed,seed_cnn \
      --batch-sizes 64,256 --methods per_layer,dp_bk --rounds 30 --calls 5 --out paper/cpu-contract-before-after \
      --file paired.json
  python scripts/before_after.py --render paper/cpu-contract-before-after/paired.json   # the table only
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

BUILD = r"""
def build(framework, model, bsz, method):
    import numpy as np
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
        return (lambda: step(params, xn, yn, None)), dp.block_until_ready
    f = ps.native_fn(method, loss="nll_log_softmax", model=model)
    if framework == "jax":
        import jax
        return (lambda: f(params, xn, yn)), jax.block_until_ready
    return (lambda: f(params, xn, yn)), (lambda v: v)
"""

CHILD = r"""
import json, random, statistics, sys, time
old, new, framework, model, bsz, method, rounds, calls = sys.argv[1:9]
bsz, rounds, calls = int(bsz), int(rounds), int(calls)
OURS = ("compare", "torch_impl", "jax_impl", "contract")
targets = {}
for name, checkout in (("old", old), ("new", new)):
    for m in [m for m in sys.modules if m.split(".")[0] in OURS]:
        del sys.modules[m]
    sys.path.insert(0, checkout)
    scope = {}
    exec(BUILD, scope)
    fn, sync = scope["build"](framework, model, bsz, method)
    for _ in range(3):  # compile and warm up while this checkout's modules are the imported ones
        sync(fn())
    sys.path.remove(checkout)
    targets[name] = (fn, sync, {m: mod for m, mod in sys.modules.items() if m.split(".")[0] in OURS})
rng = random.Random(0)
out = []
for _ in range(rounds):
    order = ["old", "new"]
    rng.shuffle(order)
    row = {}
    for name in order:
        fn, sync, mods = targets[name]
        sys.modules.update(mods)  # a late import inside a call resolves to its own checkout
        times = []
        for _ in range(calls):
            t = time.perf_counter(); sync(fn()); times.append(1e3 * (time.perf_counter() - t))
        row[name] = statistics.median(times)
    out.append(row)
roots = {name: sorted({mod.__file__ for mod in t[2].values() if getattr(mod, "__file__", None)})
         for name, t in targets.items()}
print(json.dumps({"rounds": out, "roots": roots}))
"""


FRESH = r"""
import json, statistics, sys, time
framework, model, bsz, method, calls = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
scope = {}
exec(BUILD, scope)
fn, sync = scope["build"](framework, model, bsz, method)
for _ in range(3):
    sync(fn())
times = []
for _ in range(calls):
    t = time.perf_counter(); sync(fn()); times.append(1e3 * (time.perf_counter() - t))
print(json.dumps({"median_ms": statistics.median(times)}))
"""
ENV = {"PATH": "/usr/bin:/bin", "MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**62), "JAX_PLATFORMS": "cpu"}


def one(checkout: Path, framework: str, model: str, bsz: int, method: str, calls: int) -> float:
    """One fresh process of one checkout: the median of ``calls`` timed calls (the ``processes`` mode)."""
    out = subprocess.run([sys.executable, "-c", "BUILD = " + repr(BUILD) + "\n" + FRESH, framework, model, str(bsz),
                          method, str(calls)], cwd=checkout, capture_output=True, text=True, check=True,
                         env={**ENV, "PYTHONPATH": str(checkout)})
    return json.loads(out.stdout.strip().splitlines()[-1])["median_ms"]


def paired_rounds(old: Path, new: Path, framework: str, model: str, bsz: int, method: str, rounds: int,
                  calls: int) -> list[dict]:
    """Both checkouts in one fresh process, timed in interleaved rounds (order shuffled per round): per round the
    median of ``calls`` calls of each. Each checkout's modules are imported under their own names in turn and kept,
    so both builds share one process, one torch and one jax."""
    out = subprocess.run([sys.executable, "-c", "BUILD = " + repr(BUILD) + "\n" + CHILD, str(old.resolve()),
                          str(new.resolve()), framework, model, str(bsz), method, str(rounds), str(calls)],
                         capture_output=True, text=True, env=ENV)
    if out.returncode != 0:
        raise SystemExit(f"{framework} {model} B={bsz} {method}: the timing process failed:\n{out.stderr[-2000:]}")
    got = json.loads(out.stdout.strip().splitlines()[-1])
    for name, checkout in (("old", old), ("new", new)):  # each build imported its own checkout's code, no other
        strays = [f for f in got["roots"][name] if not f.startswith(str(checkout.resolve()) + "/")]
        if strays:
            raise SystemExit(f"the {name} build imported code from outside {checkout}: {strays}")
    return got["rounds"]


def markdown(report: dict) -> str:
    """The rows as a table: new / old per row with its interval and range, from the JSON alone."""
    c = report["commits"]
    lines = [f"# new / old: {c['new']} against {c['old']} ({report['cpu']}, {report['date']})", "",
             f"`{report['command']}`", "",
             "Per row: the median over rounds of the per-round ratio new / old, its bootstrap 95% interval, and the "
             "smallest and largest round; below 1 the new code is faster.", "",
             "| workload | framework | B | method | rounds | old ms | new ms | new / old | 95% interval | range |",
             "|---|---|---:|---|---:|---:|---:|---:|---|---|"]
    for r in report["rows"]:
        ci = r.get("ratio_ci95") or paired_ratio([x["new"] for x in r["rounds"]], [x["old"] for x in r["rounds"]])
        lo, hi = (ci[0], ci[1]) if isinstance(ci, list) else (ci.lo, ci.hi)
        lines.append(f"| `{r['model']}` | {r['framework']} | {r['batch_size']} | `{r['method']}` | {len(r['rounds'])} "
                     f"| {statistics.median(x['old'] for x in r['rounds']):.2f} "
                     f"| {statistics.median(x['new'] for x in r['rounds']):.2f} | {r['ratio_median']:.3f} "
                     f"| [{lo:.3f}, {hi:.3f}] | {r['ratio_min']:.2f}..{r['ratio_max']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("old", type=Path, nargs="?")
    p.add_argument("new", type=Path, nargs="?")
    p.add_argument("--render", type=Path, metavar="JSON", help="only write JSON's table beside it (.md), no timing")
    p.add_argument("--models", default="seed_cnn,mnist_cnn,embed")
    p.add_argument("--frameworks", default="torch,jax")
    p.add_argument("--batch-sizes", default="64,256")
    p.add_argument("--methods", default="per_layer,dp_bk")
    p.add_argument("--mode", choices=("paired", "processes"), default="processes",
                   help="paired: both checkouts in one process, interleaved rounds; processes: a fresh process per "
                        "checkout and round (default %(default)s, the committed before_after.json)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--calls", type=int, default=10)
    p.add_argument("--out", type=Path)
    p.add_argument("--file", default="before_after.json", help="file name under --out (default %(default)s)")
    a = p.parse_args(argv)
    if a.render:
        a.render.with_suffix(".md").write_text(markdown(json.loads(a.render.read_text())))
        return 0
    if a.old is None or a.new is None or a.out is None:
        p.error("OLD and NEW checkouts and --out are required unless --render")
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
        (a.out / a.file).with_suffix(".md").write_text(markdown(json.loads((a.out / a.file).read_text())))

    for model in a.models.split(","):
        for fw in a.frameworks.split(","):
            for bsz in map(int, a.batch_sizes.split(",")):
                for method in a.methods.split(","):
                    rounds = []
                    if a.mode == "paired":
                        rounds = paired_rounds(a.old, a.new, fw, model, bsz, method, a.rounds, a.calls)
                        for r in rounds:
                            r["load_1min"] = os.getloadavg()[0]
                    for _ in range(a.rounds if a.mode == "processes" else 0):
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
