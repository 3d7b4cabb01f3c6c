"""Which part of JAX's bfloat16 LSTM decides its agreement with float64: its products' float32 accumulation and
its float32 bias add and state, each put back in bfloat16 (docs/precision.md).

Four configurations, each in its own process, set by ``JAX_IMPL_BF16_LSTM`` (``jax_impl.precision.LSTM_BF16``):
the policy (torch's autocast arithmetic: every product accumulated in float32 and rounded once, the biases added in
float32, so the gate pre-activations, the cell and hidden states and their cotangents are float32), "dot" (the
products return bfloat16: XLA:CPU then accumulates the transposed gate-input product of the backward in bfloat16),
"bias" (the biases added in bfloat16: the state is bfloat16) and both (what Flax's own promotion gives). For each,
per JAX method, and for torch's methods once: max |bf16 - float64| / max |float64| per parameter. The LSTM has no
ReLU or max-pool, so float64 is the reference (no decisions to replay). Usage:
  python scripts/bf16_lstm_ablation.py --batch-size 16 --out results/bf16
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CONFIGS = {"policy": "", "dot in bfloat16": "dot", "bias in bfloat16": "bias", "both in bfloat16": "dot,bias"}
METHODS = {"jax": ("loop", "vmap", "vmap_nojit", "per_layer"), "torch": ("loop", "vmap", "per_layer")}
MODEL = "lstm"


def worker(batch: int, with_torch: bool) -> list[dict]:
    """One configuration's rows (its JAX_IMPL_BF16_LSTM is in this process's environment)."""
    from compare.agreement.precision import parameter_errors
    from compare.frameworks import side
    from compare.spec import make_batch
    from compare.weights import init_weights

    w = init_weights(0, MODEL)
    x, y = make_batch(batch, 0, model=MODEL)
    ref = side("torch").per_sample_grads(w, x, y, method="vmap", dtype="float64", model=MODEL)
    rows = []
    for fw in ("jax", "torch") if with_torch else ("jax",):
        for method in METHODS[fw]:
            errs = parameter_errors(side(fw).per_sample_grads(w, x, y, method=method, dtype="bfloat16",
                                                              model=MODEL), ref)
            rows.append({"framework": fw, "method": method, "worst": max(errs, key=errs.get), "errors": errs})
    return rows


def _table(report: dict) -> list[str]:
    names = list(report["rows"][0]["errors"])
    short = [n.removeprefix("lstm.") for n in names]
    lines = [f"# bfloat16 LSTM: float32 accumulation and float32 state (lstm, B={report['meta']['batch_size']})",
             "", f"`{report['meta']['command']}` at {report['meta']['git_commit']} on {report['meta']['device']}. "
             "Errors: max |bf16 - float64| / max |float64| per parameter.", "",
             "| configuration | framework | method | worst | " + " | ".join(short) + " |",
             "|---|---|---|---|" + "---|" * len(names)]
    for r in report["rows"]:
        lines.append(f"| {r['config']} | {r['framework']} | {r['method']} | {r['errors'][r['worst']]:.2e} | "
                     + " | ".join(f"{r['errors'][n]:.2e}" for n in names) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--out", type=Path, default=Path("results/bf16"))
    p.add_argument("--worker", choices=tuple(CONFIGS), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.batch_size < 1:
        raise SystemExit(f"--batch-size must be at least 1, got {a.batch_size}")
    if a.worker is not None:
        print(json.dumps(worker(a.batch_size, with_torch=a.worker == "policy")))
        return 0
    from compare.provenance import command_line, provenance

    report = {"meta": {**provenance(command_line(argv)), "model": MODEL, "batch_size": a.batch_size}, "rows": []}
    for name, parts in CONFIGS.items():  # one process each (the switch is read at import), one after another
        proc = subprocess.run([sys.executable, __file__, "--batch-size", str(a.batch_size), "--worker", name],
                              env={**os.environ, "JAX_IMPL_BF16_LSTM": parts}, stdout=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"configuration {name!r} failed (exit {proc.returncode})")
        report["rows"] += [{"config": name, "bfloat16_parts": parts, **r} if r["framework"] == "jax" else
                           {"config": "-", "bfloat16_parts": None, **r}
                           for r in json.loads(proc.stdout.strip().splitlines()[-1])]
        print(name, flush=True)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "lstm_ablation.json").write_text(json.dumps(report, indent=1))
    lines = _table(report)
    (a.out / "lstm_ablation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
