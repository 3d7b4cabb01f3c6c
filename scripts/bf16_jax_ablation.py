"""Which part of JAX's bfloat16 policy decides its agreement with float64: the conv bias add and XLA's excess
precision, each switched off and on (docs/precision.md).

Three configurations, each in its own process (XLA reads its flags once): the policy (the conv bias added in
float32 by ``jax_impl.precision.promote_conv``, ``--xla_allow_excess_precision=false``), the bias added in
bfloat16 (Flax's own promotion), and XLA's default excess precision. For each, per method: the error
of JAX's bfloat16 per-sample gradients against the float64 replay with JAX's own bfloat16 decisions (recorded by
one ``jit(vmap)`` forward, ``jax_impl.decisions``), the worst parameter, and the worst conv-bias and other
parameters' errors separately, against the bound (2D + 3) u. Usage:
  python scripts/bf16_jax_ablation.py --model seed_cnn --batch-size 16 --out paper/cpu-bf16
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CONFIGS = {"policy": (True, False), "bias in bfloat16": (False, False), "excess precision on": (True, True)}
# name -> (bias added in float32, XLA excess precision allowed)
METHODS = ("loop", "vmap", "vmap_nojit", "per_layer")


def worker(model: str, batch: int) -> list[dict]:
    """One configuration, set by the environment its process was started with (JAX_IMPL_BF16_CONV_BIAS, XLA_FLAGS)."""
    import numpy as np

    from compare.agreement.precision import parameter_errors
    from compare.frameworks import side
    from compare.spec import make_batch
    from compare.weights import init_weights
    from contract.precision import gradient_bound

    w = init_weights(0, model)
    x, y = make_batch(batch, 0, model=model)
    ref = side("torch").per_sample_grads(w, x.astype(np.float64), y, method="vmap", dtype="float64", model=model)
    j = side("jax")
    mine = j.forward_decisions(w, x, dtype="bfloat16", model=model)
    replay = j.replay_grads(w, x, y, {s.key: mine[s.key] for s in j.decision_sites(model)}, model=model)
    biases = {k for k in ref if k.endswith(".bias") and ref[k].ndim == 2 and k.split(".")[0].startswith("conv")}
    rows = []
    for method in METHODS:
        got = j.per_sample_grads(w, x, y, method=method, dtype="bfloat16", model=model)
        errs = parameter_errors(got, replay)
        worst = max(errs, key=errs.get)
        rows.append({"method": method, "replay_error": errs[worst], "worst": worst,
                     "conv_bias_error": max((errs[k] for k in biases), default=None),
                     "other_error": max(v for k, v in errs.items() if k not in biases),
                     "float64_error": max(parameter_errors(got, ref).values()), "bound": gradient_bound(model)})
    return rows


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2e}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="seed_cnn")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--out", type=Path, default=Path("results/bf16"))
    p.add_argument("--worker", choices=tuple(CONFIGS), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker is not None:
        print(json.dumps(worker(a.model, a.batch_size)))
        return 0
    from compare.lock import versions

    report = {"meta": {"command": "python scripts/bf16_jax_ablation.py " + " ".join(sys.argv[1:] if argv is None
                                                                                    else argv),
                       "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                                text=True).stdout.strip(),
                       "model": a.model, "batch_size": a.batch_size, "versions": versions()}, "rows": []}
    procs = {}
    for name, (bias_f32, excess) in CONFIGS.items():  # one process each, side by side (XLA reads its flags once)
        env = {**os.environ, "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} "
                                          f"--xla_allow_excess_precision={str(excess).lower()}".strip(),
               "JAX_IMPL_BF16_CONV_BIAS": "float32" if bias_f32 else "bfloat16"}
        procs[name] = subprocess.Popen([sys.executable, __file__, "--model", a.model, "--batch-size",
                                        str(a.batch_size), "--worker", name], env=env, stdout=subprocess.PIPE,
                                       text=True)
    for name, proc in procs.items():
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"configuration {name!r} failed (exit {proc.returncode})")
        for row in json.loads(out.strip().splitlines()[-1]):
            report["rows"].append({"config": name, "conv_bias_in_float32": CONFIGS[name][0],
                                   "xla_excess_precision": CONFIGS[name][1], **row})
        print(name, flush=True)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "jax_ablation.json").write_text(json.dumps(report, indent=1))
    m = report["meta"]
    lines = [f"# JAX bfloat16: the conv bias add and XLA's excess precision ({m['model']}, B={m['batch_size']})", "",
             f"`{m['command']}` at {m['commit']}. Errors: max |bf16 - replay| / max |replay| per parameter, the "
             "replay being float64 with JAX's own bfloat16 decisions (one jit(vmap) forward); bound (2D + 3) u.", "",
             "| configuration | conv bias in float32 | excess precision | method | vs replay | worst parameter | "
             "conv biases | other parameters | bound |", "|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        lines.append(f"| {r['config']} | {r['conv_bias_in_float32']} | {r['xla_excess_precision']} | {r['method']} | "
                     f"{r['replay_error']:.2e} | {r['worst']} | {_fmt(r['conv_bias_error'])} | {r['other_error']:.2e} | "
                     f"{r['bound']:.2e} |")
    (a.out / "jax_ablation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
