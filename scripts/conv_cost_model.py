"""Is the conv norm's cost model right?  Each conv layer of every workload, timed both ways.

Conv norms choose per layer between materialising that layer's per-example gradient (~P d p multiply-adds per
example) and the Gram (ghost) form sum_{p,q} <u_p,u_q><g_p,g_q> (~P^2 (d + p)) by ``contract.cost_model.
gram_is_cheaper(P, d, p, CONV_GRAM_SLACK)``: P output positions, d = C_in k k, p = C_out. Here, for seed_cnn
conv1/conv2, mnist_cnn conv1/conv2 and cifar10_cnn conv1..conv8 at B in (16, 64, 256), each framework's OWN conv
rules are timed forced to each form (the side's ``layer_stages``), on the layer's real input a and output cotangent
g (float32, the workload's seeded batch and weights):
  materialize   the layer's per-example gradients by the conv rule and the squared norm of each leaf, summed (what
                the engine runs for a materialised layer's norm);
  gram          the conv norm rule with the conv route forced to gram.
JAX: each form ``jax.jit``-ed over (params, a, g) (compile excluded: one warm-up call).
Protocol: one warm-up call per form, then the two forms INTERLEAVED (mat, gram, mat, gram, ...) r times, r = 7,
fewer when a call is slow (r = max(2, min(7, 8 s / first call))); medians. One thread per framework
(``torch.set_num_threads(1)``; XLA ``--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1``) unless
--threads. Both forms' norms are checked to agree (float32, 1e-3 relative) before timing.

  python scripts/conv_cost_model.py [--batch-sizes 16,64,256] [--frameworks torch,jax] [--out paper/cpu-costmodel]

Writes <out>/costmodel.json (every record, the machine, the versions) and <out>/costmodel.md (the table).
Per record: cost_ratio = P (d + p) / (d p) (the model's gram / materialize estimate; gram chosen when < 1),
measured ratio = gram_ms / mat_ms, wrong = the model chose the slower form, penalty = its time / the faster one's.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

CONV_LAYERS = {"seed_cnn": ("conv1", "conv2"), "mnist_cnn": ("conv1", "conv2"),
               "cifar10_cnn": tuple(f"conv{i}" for i in range(1, 9))}
LOSS = "nll_log_softmax"
BUDGET_S = 8.0  # per form and point: repeats shrink so r * (one call) stays near this (at least 2)
MAX_REPEATS = 7


def _set_threads(threads: int) -> None:
    """Before torch / jax are imported: one intra-op pool size for both."""
    flags = os.environ.get("XLA_FLAGS", "")
    if threads == 1:
        flags += " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    os.environ["XLA_FLAGS"] = flags.strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import torch

    torch.set_num_threads(threads)


def cost_ratio(positions: int, d: int, p: int) -> float:
    """The cost model's gram / materialize estimate: P^2 (d + p) / (P d p)."""
    return positions * (d + p) / (d * p)


def interleaved(fns: dict[str, object], sync) -> dict[str, dict]:
    """{form: {median_ms, times_ms, first_ms}}: one warm-up each, then the forms alternated r times."""
    first = {}
    for name, fn in fns.items():
        t = time.perf_counter()
        sync(fn())
        first[name] = time.perf_counter() - t
    repeats = max(2, min(MAX_REPEATS, int(BUDGET_S / max(max(first.values()), 1e-9))))
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            sync(fn())
            times[name].append(1e3 * (time.perf_counter() - t))
    return {name: {"median_ms": statistics.median(ts), "times_ms": [round(v, 3) for v in ts],
                   "first_ms": round(1e3 * first[name], 3)} for name, ts in times.items()}


def points(framework: str, model: str, batch: int) -> list[tuple]:
    """Each conv layer of ``model``: its (P, d, p) and the interleaved timings of its materialised and Gram norms,
    through the side's public ``layer_routes`` / ``layer_stages`` (the same rules the engine runs)."""
    import math

    import numpy as np

    from compare.frameworks import side
    from compare.spec import make_batch
    from compare.weights import init_weights

    api = side(framework)
    x, y = make_batch(batch, seed=0, model=model)
    params, xn, yn = api.native_inputs(init_weights(0, model), x, y, device="cpu", model=model)
    routes = {r["layer"]: r for r in api.layer_routes(params, xn, yn, LOSS, model)}
    out = []
    for name in CONV_LAYERS[model]:
        stages, sync = api.layer_stages(params, xn, yn, LOSS, model, name)
        fns = {"materialize": stages["norm: materialize"], "gram": stages["norm: gram"]}
        np.testing.assert_allclose(np.asarray(sync(fns["gram"]())), np.asarray(sync(fns["materialize"]())),
                                   rtol=1e-3)
        g_shape = routes[name]["g_shape"]
        weight = init_weights(0, model)[f"{name}.weight"]  # canonical OIHW: d = C_in kh kw, p = C_out
        channels_first = framework == "torch"
        positions = math.prod(g_shape[2:] if channels_first else g_shape[1:-1])
        out.append((name, (positions, int(np.prod(weight.shape[1:])), int(weight.shape[0])),
                    interleaved(fns, sync)))
    return out


def machine(threads: int) -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    import flax
    import jax
    import numpy
    import torch

    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "threads_per_framework": threads,
            "shared": "2-core machine shared with other jobs' processes (timings noisy; medians of interleaved "
                      "repeats)",
            "python": platform.python_version(), "torch": torch.__version__, "jax": jax.__version__,
            "flax": flax.__version__, "numpy": numpy.__version__, "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "nice": os.nice(0)}


def _choice(positions: int, d: int, p: int, slack: float) -> str:
    from contract.cost_model import gram_is_cheaper

    return "gram" if gram_is_cheaper(positions, d, p, slack) else "materialize"


def record(fw: str, model: str, batch: int, name: str, shape: tuple[int, int, int], timing: dict) -> dict:
    """One point, judged by the rules' current conv cost model (slack ``CONV_GRAM_SLACK``) and by slack 1."""
    from contract.cost_model import CONV_GRAM_SLACK

    positions, d, p = shape
    mat, gram = timing["materialize"]["median_ms"], timing["gram"]["median_ms"]
    faster, best = ("gram" if gram < mat else "materialize"), min(mat, gram)
    out = {"framework": fw, "model": model, "layer": name, "batch_size": batch, "P": positions, "d": d, "p": p,
           "cost_ratio": round(cost_ratio(positions, d, p), 4), "slack": CONV_GRAM_SLACK,
           "materialize_ms": round(mat, 3), "gram_ms": round(gram, 3), "measured_ratio": round(gram / mat, 4),
           "measured_faster": faster}
    for suffix, slack in (("", CONV_GRAM_SLACK), ("_slack1", 1.0)):
        choice = _choice(positions, d, p, slack)
        out |= {f"model_choice{suffix}": choice, f"wrong{suffix}": choice != faster,
                f"penalty{suffix}": round((gram if choice == "gram" else mat) / best, 3)}
    return out | {"timings": timing}


def threshold_scores(records: list[dict]) -> tuple[dict[float, tuple[float, int]], float]:
    """({k: (mean penalty, points wrong)}, best k) of the rule "gram when cost_ratio < k" over all records (both
    frameworks): the best among k = 1 and the midpoints of the records' cost ratios, the rules' slack scored too.
    A point's penalty is the chosen form's time over the faster form's. Shared with scripts/seq_cost_model.py."""
    ratios = sorted({r["cost_ratio"] for r in records})
    candidates = {1.0, ratios[0] / 2, ratios[-1] * 2, *((u + v) / 2 for u, v in zip(ratios, ratios[1:]))}

    def loss(k: float) -> tuple[float, int]:
        total, wrong = 0.0, 0
        for r in records:
            t = r["gram_ms"] if r["cost_ratio"] < k else r["materialize_ms"]
            total += t / min(r["gram_ms"], r["materialize_ms"])
            wrong += t != min(r["gram_ms"], r["materialize_ms"])
        return total / len(records), wrong

    scored = {k: loss(k) for k in sorted(candidates)}
    best = min(scored, key=lambda k: scored[k])
    scored.setdefault(records[0]["slack"], loss(records[0]["slack"]))
    return scored, best


def threshold_fit(records: list[dict]) -> dict:
    """The fitted threshold against the rules' slack and slack 1 (``threshold_scores``)."""
    scored, best = threshold_scores(records)
    slack = records[0]["slack"]
    return {"slack": slack, "mean_penalty": round(scored[slack][0], 4), "wrong": scored[slack][1],
            "slack1_mean_penalty": round(scored[1.0][0], 4), "slack1_wrong": scored[1.0][1],
            "best_k": round(best, 4), "best_mean_penalty": round(scored[best][0], 4), "best_wrong": scored[best][1],
            "per_framework": {fw: {f"{key}{s}": f(r[f"{key}{s}"] for r in records if r["framework"] == fw)
                                   for s in ("", "_slack1") for key, f in (("wrong", sum), ("penalty", max))}
                              for fw in sorted({r["framework"] for r in records})}}


def markdown(records: list[dict], info: dict, fit: dict, batch_sizes: list[int], frameworks: list[str]) -> str:
    lines = ["# Conv norm cost model vs measurement", "",
             f"`python scripts/conv_cost_model.py` on {info['cpu']} ({info['logical_cpus']} logical CPUs, "
             f"{info['threads_per_framework']} thread per framework), {info['shared']}. torch {info['torch']}, "
             f"jax {info['jax']}, flax {info['flax']}, numpy {info['numpy']}, Python {info['python']}; float32.",
             "",
             "Each cell: materialize ms / gram ms (medians), then the measured faster form; **bold** where the rules' "
             f"cost model (gram when P (d + p) < {records[0]['slack']} d p, i.e. cost ratio P (d + p) / (d p) < "
             f"{records[0]['slack']}; `CONV_GRAM_SLACK`) picks the slower form, with the penalty (its time / the "
             "faster one's); (k=1: xN) where the original model (slack 1) picked the slower form.", ""]
    head = ["layer", "P", "d", "p", "cost ratio", "model"] + [f"{fw} B={b}" for fw in frameworks for b in batch_sizes]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    by = {(r["framework"], r["model"], r["layer"], r["batch_size"]): r for r in records}
    for model, names in CONV_LAYERS.items():
        for name in names:
            first = next((r for r in records if r["model"] == model and r["layer"] == name), None)
            if first is None:
                continue
            row = [f"{model} {name}", str(first["P"]), str(first["d"]), str(first["p"]), f"{first['cost_ratio']:.3g}",
                   first["model_choice"]]
            for fw in frameworks:
                for b in batch_sizes:
                    r = by.get((fw, model, name, b))
                    if r is None:
                        row.append("")
                        continue
                    cell = f"{r['materialize_ms']:.3g} / {r['gram_ms']:.3g} {r['measured_faster'][:4]}"
                    cell = f"**{cell} x{r['penalty']:.2f}**" if r["wrong"] else cell
                    row.append(cell + (f" (k=1: x{r['penalty_slack1']:.2f})" if r["wrong_slack1"] else ""))
            lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    for key, what in (("", f"slack {records[0]['slack']} (the rules)"), ("_slack1", "slack 1 (the original model)")):
        wrong = [r for r in records if r[f"wrong{key}"]]
        lines.append(f"- {what}: wrong on {len(wrong)} of {len(records)} points" + (": " + "; ".join(
            f"{r['framework']} {r['model']} {r['layer']} B={r['batch_size']} x{r[f'penalty{key}']:.2f}"
            for r in wrong) if wrong else "") + ".")
    lines += [f"- Threshold fit (gram when cost ratio < k; mean over all points of the chosen form's time / the "
              f"faster one's): slack 1: {fit['slack1_mean_penalty']} ({fit['slack1_wrong']} wrong); slack "
              f"{fit['slack']}: {fit['mean_penalty']} ({fit['wrong']} wrong); best k = {fit['best_k']}: "
              f"{fit['best_mean_penalty']} ({fit['best_wrong']} wrong) -- every k between the neighbouring measured "
              "cost ratios ranks alike.", ""]
    return "\n".join(lines)


def measure(frameworks: list[str], models: list[str], batch_sizes: list[int]) -> list[dict]:
    records = []
    for fw in frameworks:
        for model in models:
            for b in batch_sizes:
                for name, shape, timing in points(fw, model, b):
                    r = record(fw, model, b, name, shape, timing)
                    records.append(r)
                    print(f"{fw:5s} {model:11s} {name:5s} B={b:<4d} P={r['P']:<5d} d={r['d']:<5d} p={r['p']:<4d} "
                          f"cost {r['cost_ratio']:8.3g} -> {r['model_choice']:11s} mat {r['materialize_ms']:9.2f} ms  "
                          f"gram {r['gram_ms']:9.2f} ms  faster {r['measured_faster']:11s}"
                          + (f"  WRONG x{r['penalty']:.2f}" if r["wrong"] else ""), flush=True)
    return records


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch-sizes", default="16,64,256")
    ap.add_argument("--frameworks", default="torch,jax")
    ap.add_argument("--models", default=",".join(CONV_LAYERS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="results/costmodel")
    ap.add_argument("--from-json", help="re-judge a costmodel.json's timings by the current rules (no timing)")
    args = ap.parse_args(argv)
    _set_threads(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from compare.provenance import command_line, provenance
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    frameworks = args.frameworks.split(",")
    models = args.models.split(",")
    if args.from_json:  # re-judge stored timings by the rules' current cost model, no timing
        stored = json.loads(Path(args.from_json).read_text())
        info, command, meta = stored["machine"], stored["command"], stored.get("meta")
        records = [record(r["framework"], r["model"], r["batch_size"], r["layer"], (r["P"], r["d"], r["p"]),
                          r["timings"]) for r in stored["records"]]
        batch_sizes = sorted({r["batch_size"] for r in records})
        frameworks = list(dict.fromkeys(r["framework"] for r in records))
    else:
        info, command = machine(args.threads), command_line(argv)
        meta = provenance(command)
        records = measure(frameworks, models, batch_sizes)
    fit = threshold_fit(records)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "costmodel.json").write_text(json.dumps({"meta": meta, "machine": info, "command": command,
                                                    "threshold_fit": fit, "records": records}, indent=1) + "\n")
    (out / "costmodel.md").write_text(markdown(records, info, fit, batch_sizes, frameworks))
    print(json.dumps(fit, indent=1))


if __name__ == "__main__":
    main()
