"""bfloat16 against float32 on this machine, every per-sample method and private step, timed as pairs.

For each (framework, kind, method) both dtypes are built by ``compare.benchmark.targets.prepare`` (exactly what
``compare.run`` times), warmed up, then timed round by round, float32 and bfloat16 alternating in one process;
the result is the median per-round ratio bfloat16 / float32 with a bootstrap 90% interval (STYLE: a ratio is
measured as a pair). Records the CPU, its bfloat16 support (lscpu flags avx512_bf16, amx_bf16), versions, the
commit and the command. Usage:
  python scripts/bf16_speed.py --model seed_cnn --batch-size 32 --rounds 7 --out paper/cpu-bf16
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

from compare.benchmark.targets import TARGETS, prepare, sync_fn  # noqa: E402
from compare.frameworks import FRAMEWORKS  # noqa: E402
from compare.weights import init_weights  # noqa: E402

SKIP = {"compile": "~90 s of torch.compile per dtype and shape on CPU", "compile_cudagraphs": "cuda only"}


def cpu_info() -> dict:
    text = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("Model name")), "?")
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("Flags")), [])
    return {"model": model, "cpus": os.cpu_count(), "bf16_flags": {f: f in flags for f in
                                                                   ("avx512_bf16", "amx_bf16", "amx_tile")}}


def pair(framework: str, kind: str, method: str, weights: dict, batch: int, model: str, rounds: int) -> dict:
    sync = sync_fn(framework, "cpu")
    calls = {}
    for dtype in ("float32", "bfloat16"):
        fn, args = prepare(framework, kind, method, weights, batch, dtype=dtype, device="cpu", loss="nll_log_softmax",
                           model=model)
        sync(fn(*args))  # compile / warm up
        calls[dtype] = (fn, args)
    times = {"float32": [], "bfloat16": []}
    for _ in range(rounds):
        for dtype, (fn, args) in calls.items():
            t0 = time.perf_counter()
            sync(fn(*args))
            times[dtype].append((time.perf_counter() - t0) * 1e3)
    ratios = np.array(times["bfloat16"]) / np.array(times["float32"])
    rng = np.random.default_rng(0)
    boot = [np.median(rng.choice(ratios, ratios.size)) for _ in range(1000)]
    return {"framework": framework, "kind": kind, "method": method, "float32_ms": statistics.median(times["float32"]),
            "bfloat16_ms": statistics.median(times["bfloat16"]), "ratio": float(np.median(ratios)),
            "ratio_90": [float(np.percentile(boot, 5)), float(np.percentile(boot, 95))]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="seed_cnn")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--out", type=Path, default=Path("results/bf16"))
    a = p.parse_args(argv)
    weights = init_weights(0, a.model)
    rows = []
    for fw in FRAMEWORKS:
        for kind in ("reference", "per_sample", "dp"):
            for method in TARGETS[kind].methods(fw):
                if method in SKIP:
                    rows.append({"framework": fw, "kind": kind, "method": method, "skipped": SKIP[method]})
                    continue
                try:
                    rows.append(pair(fw, kind, method, weights, a.batch_size, a.model, a.rounds))
                except Exception as err:  # recorded, not dropped
                    rows.append({"framework": fw, "kind": kind, "method": method, "failed": f"{type(err).__name__}: {err}"})
                print(json.dumps(rows[-1]), flush=True)
    from compare.provenance import command_line, provenance

    meta = {**provenance(command_line(argv, "python scripts/bf16_speed.py")), "cpu": cpu_info(), "load_average": os.getloadavg(), "model": a.model,
            "batch_size": a.batch_size, "rounds": a.rounds, "threads": "framework defaults",
            "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "speed.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [f"# bfloat16 / float32 step time, {a.model} B={a.batch_size} ({meta['cpu']['model']}, "
             f"{meta['cpu']['cpus']} CPUs, bf16 flags {meta['cpu']['bf16_flags']})", "",
             f"`{meta['command']}` at {(meta['git_commit'] or '?')[:7]}, malloc {meta['malloc_env'] or 'default'}; load average {meta['load_average'][0]:.1f} at the end "
             "(shared machine: absolute ms are noisy, the paired ratios less so).", "",
             "| framework | kind | method | float32 ms | bfloat16 ms | bf16/f32 (median of rounds) | 90% interval |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "ratio" in r:
            lines.append(f"| {r['framework']} | {r['kind']} | {r['method']} | {r['float32_ms']:.1f} | "
                         f"{r['bfloat16_ms']:.1f} | {r['ratio']:.2f} | {r['ratio_90'][0]:.2f}-{r['ratio_90'][1]:.2f} |")
        else:
            lines.append(f"| {r['framework']} | {r['kind']} | {r['method']} | {r.get('skipped') or r.get('failed')} ||||")
    (a.out / "speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
