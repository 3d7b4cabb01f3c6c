"""bfloat16 agreement with a bound: per workload, framework and method, the error against float64, torch against
JAX, and the clipping guarantee. ``python -m compare.agreement.precision --out DIR`` writes DIR/precision.json
and DIR/precision.md (the committed run: paper/cpu-bf16/).

Errors are per parameter, max |got - ref| over the batch relative to the float64 reference's max |value|, the
worst parameter reported. ``bound`` is ``contract.precision.gradient_bound`` ((2D + 3) u, u = 2^-8) for the
smooth piece. Outliers are explained as the float32 ones are (FINDINGS.md): the float64 oracle is replayed with
the framework's own bfloat16 ReLU masks and max-pool winners forced (``replay_grads``); ``replay`` is the error
against that replay, and ``flips`` the fraction of ReLU / max-pool decisions that differ from float64's.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from compare.agreement import clip_guarantee as G
from compare.frameworks import FRAMEWORKS, side
from compare.paths import output_dir
from compare.spec import MODELS, make_batch, parse_models
from compare.weights import init_weights
from contract.precision import BF16_DEPTH, U_BF16, clip_bound, gradient_bound

# Methods left out by default, with the reason (each is run with --methods NAME).
SKIPPED: dict[str, str] = {"compile": "torch.compile of vmap: ~90 s of compilation per workload and shape on CPU"}
CLIPPINGS = ("materialize", "ghost", "bk")


def parameter_errors(got: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> dict[str, float]:
    """Per parameter, max |got - ref| / max |ref| (a parameter whose reference is all zero is skipped)."""
    out = {}
    for k, r in ref.items():
        scale = float(np.abs(r).max())
        if scale > 0:
            out[k] = float(np.abs(np.asarray(got[k], np.float64) - r).max()) / scale
    return out


def relative_error(got: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> float:
    """max over parameters of ``parameter_errors``."""
    return max(parameter_errors(got, ref).values(), default=0.0)


def worst_parameter(got: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> str | None:
    errors = parameter_errors(got, ref)
    return max(errors, key=errors.get) if errors else None


def _flips(decisions: dict[str, np.ndarray], ref: dict[str, np.ndarray], sites: list) -> float:
    """Fraction of all ReLU gates and max-pool winners that differ from float64's."""
    differ = total = 0
    for site in sites:
        differ += int((decisions[site.key] != ref[site.key]).sum())
        total += decisions[site.key].size
    return differ / total if total else 0.0


def _replay(fw: str, weights: dict, x: np.ndarray, y: np.ndarray, model: str,
            ref_decisions: dict[str, np.ndarray] | None) -> tuple[dict | None, float | None]:
    """(float64 gradients with the framework's bfloat16 decisions forced, fraction of decisions flipped)."""
    s = side(fw)
    sites = s.decision_sites(model)
    if not sites:
        return None, None
    mine = s.forward_decisions(weights, x, dtype="bfloat16", model=model)
    forced = {site.key: mine[site.key] for site in sites}
    return s.replay_grads(weights, x, y, forced, model=model), _flips(mine, ref_decisions, sites)


def gradient_rows(model: str, batch_size: int, methods: tuple[str, ...] | None, seed: int = 0) -> list[dict]:
    """One row per (framework, method) of ``model``: errors vs float64, vs its replay, and vs the other side."""
    w = init_weights(0, model)
    x, y = make_batch(batch_size, seed, model=model)
    x64 = x.astype(np.float64) if x.dtype.kind == "f" else x
    ref = side("torch").per_sample_grads(w, x64, y, method="vmap", dtype="float64", model=model)
    sites = side("torch").decision_sites(model)
    ref_dec = side("torch").forward_decisions(w, x64, dtype="float64", model=model) if sites else None
    rows, got_by = [], {}
    for fw in FRAMEWORKS:
        s = side(fw)
        replay, flips = _replay(fw, w, x, y, model, ref_dec)
        for method, why in s.applicable_methods(model).items():
            if methods is not None and method not in methods:
                continue
            row = {"model": model, "framework": fw, "method": method, "batch_size": batch_size,
                   "bound": gradient_bound(model), "depth": BF16_DEPTH[model]}
            why = why or (SKIPPED.get(method) if methods is None else None)
            if why is not None:
                rows.append({**row, "status": "skipped", "reason": why})
                continue
            t0 = time.perf_counter()
            got = s.per_sample_grads(w, x, y, method=method, dtype="bfloat16", model=model)
            got_by[(fw, method)] = got
            err = relative_error(got, ref)
            row.update(status="ok", seconds=round(time.perf_counter() - t0, 2), error=err, flips=flips,
                       replay_error=None if replay is None else relative_error(got, replay),
                       worst=worst_parameter(got, ref if replay is None else replay))
            explained = err <= row["bound"] or (replay is not None and row["replay_error"] <= row["bound"])
            row["verdict"] = ("within bound" if err <= row["bound"] else
                              "decision flips (replay within bound)" if explained else "exceeds bound")
            rows.append(row)
    for row in rows:  # torch against JAX, same method name where both have it, else each side's per_layer
        if row["status"] != "ok":
            continue
        other = "jax" if row["framework"] == "torch" else "torch"
        peer = got_by.get((other, row["method"])) or got_by.get((other, "per_layer"))
        row["cross_error"] = None if peer is None else relative_error(got_by[(row["framework"], row["method"])],
                                                                       {k: np.asarray(v, np.float64)
                                                                        for k, v in peer.items()})
    return rows


def clipping_rows(model: str, batch_size: int) -> list[dict]:
    """Per framework and strategy: the worst clipped contribution over C - 1, its bound, and decision flips."""
    rows = []
    for fw in FRAMEWORKS:
        w = init_weights(0, model)
        if MODELS[model].tokens:  # ids cannot be scaled: C = the median float64 norm of the plain batch
            x, y = make_batch(batch_size, 0, model=model)
            norms64 = G.float64_norms(fw, w, x, y, model)
            clip, inputs = float(np.median(norms64)), "plain (C = median norm)"
        else:
            x, y, norms64, clip = G.adversarial_batch(fw, w, batch_size, model)
            inputs = "adversarial (norms at C (1 + k u), k = -4, -1, 1, 4)"
        for clipping in CLIPPINGS:
            got = G.contributions(fw, w, x, y, model, clipping, clip)
            delta = clip_bound(clipping, model, MODELS[model].num_params)
            flips = G.decision_flips(fw, w, x, y, model, clipping, norms64, clip)
            rows.append({"model": model, "framework": fw, "clipping": clipping, "batch_size": batch_size,
                         "inputs": inputs, "clip": clip, "worst_excess": float(got.max() / clip - 1),
                         "bound": delta, "holds": bool(got.max() <= clip * (1 + delta)),
                         "clip_decision_flips": flips / batch_size})
    return rows


def _fmt(v: object) -> str:
    return "-" if v is None else f"{v:.2e}" if isinstance(v, float) else str(v)


def markdown(report: dict) -> str:
    m = report["meta"]
    seen = list(dict.fromkeys(r["model"] for r in report["gradients"] + report["clipping"]))
    runs = m.get("parts", [{**m, "models": seen}])  # one run: its workloads are its rows'
    lines = [f"# bfloat16 agreement and clipping ({m['cpu']}, commit {m['commit']})", "",
             f"{', '.join(f'{k} {v}' for k, v in m['versions'].items() if v)}; XLA_FLAGS `{m.get('xla_flags', '')}`.",
             "", *(f"- `{r['command']}` at {r['commit']}: {', '.join(r['models'])} ({r.get('seconds', '-')} s)"
                   for r in runs), "",
             f"Errors: max |bf16 - float64| / max |float64| per parameter, the worst parameter; bound (2D + 3) u, "
             f"u = 2^-8 = {U_BF16:.2e} (docs/precision.md); replay: against float64 with the side's own bfloat16 "
             "ReLU / max-pool decisions forced; flips: fraction of those decisions that differ from float64's; "
             "cross: torch against JAX; worst: the parameter with the largest error against the replay (or against "
             "float64 where the workload has no decision).", "",
             "| model | framework | method | error | bound | replay | flips | cross | worst | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["gradients"]:
        if r["status"] != "ok":
            lines.append(f"| {r['model']} | {r['framework']} | {r['method']} | {r['status']}: {r['reason']} ||||||||")
            continue
        lines.append(f"| {r['model']} | {r['framework']} | {r['method']} | {_fmt(r['error'])} | {_fmt(r['bound'])} | "
                     f"{_fmt(r['replay_error'])} | {_fmt(r['flips'])} | {_fmt(r.get('cross_error'))} | "
                     f"{r.get('worst') or '-'} | {r['verdict']} |")
    lines += ["", "Clipping: every example's clipped contribution ||c_b g_b|| (float64 norm of what the strategy "
              "computes in bfloat16) against C (1 + delta); clip decision flips: fraction of examples whose "
              "norm > C decision in bfloat16 differs from float64's.", "",
              "| model | framework | clipping | inputs | worst ||c g||/C - 1 | delta | holds | clip decision flips |",
              "|---|---|---|---|---|---|---|---|"]
    for r in report["clipping"]:
        lines.append(f"| {r['model']} | {r['framework']} | {r['clipping']} | {r['inputs']} | "
                     f"{r['worst_excess']:.2e} | {r['bound']:.2e} | {r['holds']} | {r['clip_decision_flips']:.3f} |")
    return "\n".join(lines) + "\n"


def combine(parts: list[Path], out: Path, command: str) -> int:
    """One report from runs over different workloads (each with its own command), rows in ``MODELS`` order.
    A part that is itself a combined report contributes its runs, so a table can grow by one workload at a time;
    a workload in several parts is taken from the last of them (a re-run replaces its rows and its run's mention)."""
    files = [d / "precision.json" for d in parts]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise SystemExit(f"--combine: no such file: {', '.join(missing)}")
    reports = [json.loads(f.read_text()) for f in files]
    order = {name: i for i, name in enumerate(MODELS)}
    latest = {g["model"]: i for i, r in enumerate(reports) for g in r["clipping"] + r["gradients"]}
    metas = []
    for i, r in enumerate(reports):
        runs = r["meta"]["parts"] if "parts" in r["meta"] else [  # a combined part: its runs
            {**r["meta"], "models": sorted({g["model"] for g in r["clipping"]}, key=order.get)}]
        for m in runs:
            kept = [name for name in m["models"] if latest.get(name) == i]
            if kept:
                metas.append({**m, "models": kept})
    first = metas[0]
    meta = {"command": command, "commit": first["commit"], "cpu": first["cpu"], "versions": first["versions"],
            "u": first["u"], "xla_flags": first.get("xla_flags", ""), "parts": metas}
    rows = {key: sorted((g for i, r in enumerate(reports) for g in r[key] if latest[g["model"]] == i),
                        key=lambda g: order[g["model"]]) for key in ("gradients", "clipping")}
    report = {"meta": meta, **rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / "precision.json").write_text(json.dumps(report, indent=1))
    (out / "precision.md").write_text(markdown(report))
    return 0


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=parse_models, default=tuple(MODELS), help="NAME[,NAME...] or all (default all)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--clip-batch-size", type=int, default=8)
    p.add_argument("--methods", type=lambda t: tuple(m for m in t.split(",") if m), default=None,
                   help=f"methods to run (default: every applicable one except {tuple(SKIPPED)})")
    p.add_argument("--out", type=output_dir, default=Path("results/bf16"))
    p.add_argument("--resume", action="store_true", help="keep the workloads DIR/precision.json already has")
    p.add_argument("--combine", type=Path, nargs="+", metavar="PART",
                   help="write one table to --out from the PART/precision.json of runs over different workloads")
    a = p.parse_args(argv)
    from compare.provenance import command_line, provenance

    if a.combine:
        return combine(a.combine, a.out, command_line(argv, "python -m compare.agreement.precision"))
    t0 = time.time()

    prov = provenance(command_line(argv, "python -m compare.agreement.precision"))
    report = {"meta": {**prov, "commit": (prov["git_commit"] or "")[:7], "cpu": _cpu(), "u": U_BF16},
              "gradients": [], "clipping": []}
    done: set[str] = set()
    if a.resume and (a.out / "precision.json").exists():
        old = json.loads((a.out / "precision.json").read_text())
        report["gradients"], report["clipping"] = old["gradients"], old["clipping"]
        done = {r["model"] for r in old["clipping"]}
        report["meta"]["resumed"] = old["meta"]
    a.out.mkdir(parents=True, exist_ok=True)
    for model in (m for m in a.model if m not in done):
        report["gradients"] += gradient_rows(model, a.batch_size, a.methods)
        report["clipping"] += clipping_rows(model, a.clip_batch_size)
        report["meta"]["seconds"] = round(time.time() - t0, 1)
        report["meta"]["xla_flags"] = os.environ.get("XLA_FLAGS", "")  # jax_impl sets excess precision off
        (a.out / "precision.json").write_text(json.dumps(report, indent=1))  # after each workload: a stop keeps it
        (a.out / "precision.md").write_text(markdown(report))
        print(f"{model}: done at {time.time() - t0:.0f} s", flush=True)
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
