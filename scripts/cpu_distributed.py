"""Step time of compare.train on 1 device, 2 devices and 2 processes per workload and batch size, with the bytes
each step all-reduces: ``python scripts/cpu_distributed.py --models logreg,ffnn --batch-sizes 64,256``.

Writes ``paper/cpu-distributed/results.json`` (command, commit, CPU, versions, one row per run). On a machine
with fewer cores than replicas this measures the overhead of splitting a step, not a speed-up.
"""
from __future__ import annotations

import argparse
import json
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


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--models", default="logreg,ffnn,mnist_cnn,embed,seed_cnn,cifar10_cnn,lstm,transformer")
    p.add_argument("--batch-sizes", default="64,256")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--out", type=Path, default=ROOT / "paper" / "cpu-distributed" / "results.json")
    a = p.parse_args()
    sys.path.insert(0, str(ROOT))

    from compare.provenance import command_line, provenance

    prov = provenance(command_line(None, "python scripts/cpu_distributed.py"))
    report = {"meta": prov, "command": prov["command"], "commit": prov["git_commit"], "cpu": cpu_model(),
              "cores": prov["cores"], "versions": prov["versions"],
              "note": "float32, clipping bk, median step time over steps 2..N (the first compiles); on 2 cores two "
                      "replicas share the cores: overhead, not speed-up", "rows": []}
    for model in a.models.split(","):
        for batch in map(int, a.batch_sizes.split(",")):
            for mode, flags in MODES.items():
                with tempfile.TemporaryDirectory() as tmp:
                    cmd = [sys.executable, "-m", "compare.train", "--model", model, "--steps", str(a.steps),
                           "--batch-size", str(batch), "--clipping", "bk", "--out", tmp, *flags]
                    t0 = time.time()
                    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
                    row = {"model": model, "batch_size": batch, "mode": mode, "wall_s": round(time.time() - t0, 1)}
                    if proc.returncode != 0:
                        row["error"] = proc.stderr.strip().splitlines()[-1][:300]
                    else:
                        path = Path(tmp) / ("train.json" if model == "seed_cnn" else f"{model}/train.json")
                        runs = json.loads(path.read_text())["frameworks"]
                        row.update({fw: {"step_ms": r["step_ms"], "communication": r["communication"]}
                                    for fw, r in runs.items()})
                report["rows"].append(row)
                print(json.dumps(row), flush=True)
                a.out.parent.mkdir(parents=True, exist_ok=True)
                a.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
