"""Step time of compare.train on 1 device, 2 devices and 2 processes per workload and batch size, with the bytes
each step all-reduces: ``python scripts/cpu_distributed.py --models logreg,ffnn --batch-sizes 64,256``.

Writes ``paper/cpu-distributed/results.json`` (command, commit, CPU, versions, one row per run, with the load
average before it) after every run, so a stopped sweep keeps what finished; runs go batch size by batch size, each
under ``--timeout``. On a machine with fewer cores than replicas this measures the overhead of splitting a step,
not a speed-up.

Threads: every torch replica gets ``--threads`` intra-op threads (default 1: ``OMP_NUM_THREADS``), so 1 device and 2
replicas compare at the same threads per replica; ``--processes`` and spawned ``--devices`` already give each
replica cores / replicas = 1 on 2 cores. Measured on this 2-core machine under a load average of ~13 from other
jobs: torch's logreg B = 64 DP step takes 115.5 ms with 2 threads and 1.6 ms with 1 (OpenMP's threads wait for
each other on oversubscribed cores).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODES = {"1 device": [], "2 devices": ["--devices", "2"], "2 processes": ["--processes", "2"]}


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def table(report: dict) -> str:
    """results.md: one row per (workload, batch size), each framework's step time per mode (ms), the bytes one step
    all-reduces and the load average before the runs; written from results.json alone."""
    modes = list(MODES)
    head = ["model", "B", *[f"{fw} {m} (ms)" for fw in ("torch", "jax") for m in modes], "all-reduce B/step",
            "load (1 min)"]
    commits = ", ".join(dict.fromkeys(r.get("commit", report["commit"])[:10] for r in report["rows"]))
    lines = [f"Measured {report.get('date', '')} on {report['cpu']} ({report['cores']} cores), commit(s) "
             f"{commits}, torch {report['versions']['torch']}, jax {report['versions']['jax']}, "
             f"{report['threads_per_torch_replica']} torch thread(s) per replica; {report['note']}.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows: dict[tuple[str, int], dict[str, dict]] = {}
    for r in report["rows"]:
        rows.setdefault((r["model"], r["batch_size"]), {})[r["mode"]] = r
    for (model, batch), by_mode in rows.items():
        cells = []
        for fw in ("torch", "jax"):
            for m in modes:
                r = by_mode.get(m)
                cells.append("not run" if r is None else "not run on a CPU" if "skipped" in r else
                             r.get("error", "")[:40] or f"{r[fw]['step_ms']:.1f}")
        done = [r for r in by_mode.values() if "error" not in r and "skipped" not in r]
        comm = done[0]["torch"]["communication"]["allreduce_bytes"] if done else ""
        load = "/".join(f"{r['load_average_1min_before']:.0f}" for r in by_mode.values()
                        if "load_average_1min_before" in r)
        lines.append("| " + " | ".join([model, str(batch), *cells, str(comm), load]) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--models", default="logreg,ffnn,mnist_cnn,embed,seed_cnn,cifar10_cnn,lstm,transformer")
    p.add_argument("--batch-sizes", default="64,256")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads per replica (OMP_NUM_THREADS)")
    p.add_argument("--timeout", type=float, default=600, help="seconds per run before it is recorded as timed out")
    p.add_argument("--out", type=Path, default=ROOT / "paper" / "cpu-distributed" / "results.json")
    p.add_argument("--append", action="store_true", help="keep --out's rows and skip the runs it has "
                   "(failed or timed-out runs are run again)")
    p.add_argument("--table", action="store_true", help="only write results.md next to --out from --out")
    a = p.parse_args()
    if a.table:
        (a.out.parent / "results.md").write_text(table(json.loads(a.out.read_text())))
        return 0
    sys.path.insert(0, str(ROOT))

    from compare.provenance import command_line, provenance

    prov = provenance(command_line(None, "python scripts/cpu_distributed.py"))
    commit = prov["git_commit"]
    report = {"meta": prov, "command": prov["command"], "commit": commit, "date": time.strftime("%Y-%m-%d"),
              "cpu": cpu_model(), "cores": prov["cores"], "versions": prov["versions"],
              "threads_per_torch_replica": a.threads,
              "note": "float32, clipping bk, median step time over steps 2..N (the first compiles); on 2 cores two "
                      "replicas share the cores: overhead, not speed-up", "rows": []}
    if a.append and a.out.exists():
        earlier = json.loads(a.out.read_text())
        report["rows"] = [{**r, "commit": r.get("commit", earlier["commit"])} for r in earlier["rows"]]
    have = {(r["model"], r["batch_size"], r["mode"]) for r in report["rows"] if "error" not in r}
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads)}
    from compare.benchmark.config import SUITES

    cpu_sizes = dict(SUITES["fast-dpsgd"]["cpu_batch_sizes"])  # what the study times on a CPU, per workload
    for batch in map(int, a.batch_sizes.split(",")):
        for model in a.models.split(","):
            for mode, flags in MODES.items():
                if (model, batch, mode) in have:
                    continue
                if batch not in cpu_sizes.get(model, (batch,)):
                    row = {"model": model, "batch_size": batch, "mode": mode, "commit": commit,
                           "skipped": f"not run on a CPU: the study times {model} at B = "
                                      f"{', '.join(map(str, cpu_sizes[model]))} only there (compare.benchmark.config)"}
                    report["rows"] = [r for r in report["rows"] if (r["model"], r["batch_size"], r["mode"]) !=
                                      (model, batch, mode)] + [row]
                    a.out.parent.mkdir(parents=True, exist_ok=True)
                    a.out.write_text(json.dumps(report, indent=2))
                    continue
                with tempfile.TemporaryDirectory() as tmp:
                    cmd = [sys.executable, "-m", "compare.train", "--model", model, "--steps", str(a.steps),
                           "--batch-size", str(batch), "--clipping", "bk", "--out", tmp, *flags]
                    t0, load = time.time(), os.getloadavg()[0]
                    try:
                        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env,
                                              timeout=a.timeout)
                    except subprocess.TimeoutExpired:
                        proc = None
                    row = {"model": model, "batch_size": batch, "mode": mode, "wall_s": round(time.time() - t0, 1),
                           "load_average_1min_before": load, "commit": commit}
                    if proc is None:
                        row["error"] = f"timed out after {a.timeout:g} s"
                    elif proc.returncode != 0:
                        row["error"] = proc.stderr.strip().splitlines()[-1][:300]
                    else:
                        path = Path(tmp) / ("train.json" if model == "seed_cnn" else f"{model}/train.json")
                        runs = json.loads(path.read_text())["frameworks"]
                        row.update({fw: {"step_ms": r["step_ms"], "communication": r["communication"]}
                                    for fw, r in runs.items()})
                report["rows"] = [r for r in report["rows"] if (r["model"], r["batch_size"], r["mode"]) !=
                                  (model, batch, mode)] + [row]  # a failed run's row is replaced
                print(json.dumps(row), flush=True)
                a.out.parent.mkdir(parents=True, exist_ok=True)
                a.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
