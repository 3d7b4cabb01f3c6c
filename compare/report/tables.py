"""Tables of benchmark runs, printed from their records: per-sample methods, private steps, two environments,
agreement per workload, the study's claims. Rows in registry order: our own methods, then the peers of
``contract.peers``.
"""
from __future__ import annotations

from compare.benchmark.paired import GOALS
from compare.benchmark.records import ResultsFile
from compare.benchmark.suite import peer_heading, suite_rows
from compare.report.markdown import num, sci, span, table
from contract.peers import names as peer_names

OWN_PER_SAMPLE_ORDER = {"torch": ("batched", "loop", "vmap", "compile", "per_layer"),
                        "jax": ("batched", "loop", "vmap", "vmap_nojit", "per_layer", "vmap_patches")}
OWN_DP_ORDER = ("sgd", "dp_sgd", "dp_ghost", "dp_bk")
FRAMEWORKS = ("torch", "jax")
FW_NAME = {"torch": "PyTorch", "jax": "JAX"}

Index = dict[tuple[str, str, int], dict]


def per_sample_order() -> dict[str, tuple[str, ...]]:
    return {fw: (*own, *peer_names(fw, "per_sample")) for fw, own in OWN_PER_SAMPLE_ORDER.items()}


def dp_order() -> tuple[str, ...]:
    return (*OWN_DP_ORDER, *peer_names(kind="dp"))


def index(run: ResultsFile, model: str | None = None) -> Index:
    """{(framework, method, batch size): record} of one workload of a run (every workload when ``None``)."""
    return {(r["framework"], r["method"], r["batch_size"]): r for r in run.timings
            if model is None or (r.get("model") or "seed_cnn") == model}


def ok(r: dict | None) -> bool:
    return r is not None and r.get("status") == "ok" and r.get("median_ms") is not None


def _cell(r: dict | None, floor: bool = True) -> str:
    if r is None:
        return "–"
    if not ok(r):
        return r["status"]
    f = r.get("ratio_to_floor")
    return f"{r['median_ms']:.1f}" + (f" ({f:.2f})" if floor and f is not None and r["method"] != "batched" else "")


def per_sample(run: ResultsFile, sizes: tuple[int, ...]) -> str:
    """ms per batch (× floor) of every per-sample method at ``sizes``, peak MB at the last size."""
    t = index(run)
    rows = []
    for fw, methods in per_sample_order().items():
        for m in methods:
            recs = [t.get((fw, m, b)) for b in sizes]
            if not any(recs):
                continue
            peak = recs[-1].get("peak_mem_bytes") if ok(recs[-1]) else None
            name = "batched reference" if m == "batched" else f"`{m}`"
            rows.append([fw, name, *(_cell(r) for r in recs), f"{peak / 1e6:.0f}" if peak else "–"])
    return table(["framework", "method", *(f"B={b} ms (× floor)" for b in sizes), f"peak MB at {sizes[-1]}"],
                 rows, "ll" + "r" * (len(sizes) + 1))


def dp(run: ResultsFile, sizes: tuple[int, ...]) -> str:
    """ms per private step (× that framework's ``sgd``) at ``sizes``, and peak memory × sgd's at each size."""
    t = index(run)
    rows = []
    for fw in FRAMEWORKS:
        for m in dp_order():
            recs = [t.get((fw, m, b)) for b in sizes]
            if not any(recs):
                continue
            cells = []
            for b, r in zip(sizes, recs):
                sgd = t.get((fw, "sgd", b))
                if ok(r) and ok(sgd) and m != "sgd":
                    peak = (f", mem {r['peak_mem_bytes'] / sgd['peak_mem_bytes']:.2f}×"
                            if r.get("peak_mem_bytes") and sgd.get("peak_mem_bytes") else "")
                    cells.append(f"{r['median_ms']:.1f} ({r['median_ms'] / sgd['median_ms']:.2f}×{peak})")
                elif ok(r):
                    cells.append(f"{r['median_ms']:.1f} ({r['peak_mem_bytes'] / 1e6:.0f} MB)"
                                 if r.get("peak_mem_bytes") else f"{r['median_ms']:.1f}")
                else:
                    cells.append(_cell(r, floor=False))
            rows.append([fw, f"`{m}`", *cells])
    return table(["framework", "step", *(f"B={b} ms (× sgd, peak × sgd)" for b in sizes)], rows,
                 "ll" + "r" * len(sizes))


def median_of_rounds(runs: list[ResultsFile], key: tuple[str, str, int]) -> float | None:
    v = sorted(index(r)[key]["median_ms"] for r in runs if ok(index(r).get(key)))
    if not v:
        return None
    return v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2


def versions(old: list[ResultsFile], new: list[ResultsFile], sizes: tuple[int, ...] = (64, 256)) -> str:
    """The same targets in two environments: the median over each environment's rounds, new/old."""
    rows = []
    for fw in FRAMEWORKS:
        for m in ("batched", "per_layer", "vmap", "sgd", "dp_bk"):
            cells = []
            for b in sizes:
                o, n = median_of_rounds(old, (fw, m, b)), median_of_rounds(new, (fw, m, b))
                cells.append(f"{o:.1f} → {n:.1f} ({n / o:.2f})" if o and n else "–")
            rows.append([fw, "batched reference" if m == "batched" else f"`{m}`", *cells])
    return table(["framework", "target", *(f"B={b} old → new ms (new/old)" for b in sizes)], rows, "ll" + "r" * len(sizes))


def agreement_row(model: str, rep: dict) -> list[str]:
    """One workload's agreement: the largest float64 error of each framework (every method against its loop
    and the reference), torch vs JAX in float64, float32 on samples with no flip, flips and their explanation."""
    errs = rep["float64_max_rel_err"]
    fw = {f: max((v for k, v in errs.items() if k.startswith(f + "/") and " vs " not in k), default=None)
          for f in FRAMEWORKS}
    cross = max((v for k, v in errs.items() if " vs " in k), default=None)
    smooth = rep.get("smooth_max_rel_err", {})
    flips = {k: len(v) for k, v in rep.get("flipped_samples", {}).items() if v}
    explained = sum(e["explained"] for v in rep.get("explanations", {}).values() for e in v)
    na = ", ".join(f"{k.split('/')[0]} `{k.split('/')[1]}`" for k, r in rep.get("not_applicable", {}).items()
                   if r.startswith("not applicable"))
    flip_text = (", ".join(f"{k.split('/')[0]} {n}" for k, n in flips.items()) + f" ({explained} explained)"
                 if flips else "none")
    return [f"`{model}`", str(rep["batch_size"]), sci(fw["torch"]), sci(fw["jax"]), sci(cross),
            f"{sci(smooth.get('torch/float32'))} / {sci(smooth.get('jax/float32'))}", flip_text,
            "yes" if rep.get("ok") else "**no**", na or "–"]


AGREEMENT_HEADER = ["workload", "B", "float64 torch", "float64 JAX", "torch vs JAX (float64)",
                    "float32 torch / JAX, no flip", "float32 flips (explained)", "all within tolerance",
                    "not applicable"]


def agreement(reports: dict[str, dict]) -> str:
    return table(AGREEMENT_HEADER, [agreement_row(m, r) for m, r in reports.items()], "lrrrrllll")


def claims(timings: list[dict]) -> str:
    """Per workload, over the run's batch sizes (min–max): JAX's best private step against the best PyTorch one
    (ours or Opacus'), each framework's best private step against its peer library, and the DP overhead
    (× own sgd) of the best private step of each framework and of each peer."""
    torch_peer, jax_peer = peer_heading("torch"), peer_heading("jax")
    rows = suite_rows(timings)

    def best_torch(r: dict) -> float | None:
        c = [v for v in ((r["torch"].get("private") or {}).get("ms"), (r["torch"].get("peer_best") or {}).get("ms"))
             if v]
        return min(c) if c else None

    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        jax_best = [(r["jax"].get("private") or {}).get("ms") for r in mine]
        out.append([f"`{model}`",
                    span([bt / jb if bt and jb else None for bt, jb in zip(map(best_torch, mine), jax_best)]),
                    span([(r["torch"].get("peer_best") or {}).get("over_ours") for r in mine]),
                    span([(r["jax"].get("peer_best") or {}).get("over_ours") for r in mine]),
                    span([(r["torch"].get("private") or {}).get("x_sgd") for r in mine]),
                    span([(r["jax"].get("private") or {}).get("x_sgd") for r in mine]),
                    span([(r["torch"].get("peer_best") or {}).get("x_sgd") for r in mine]),
                    span([(r["jax"].get("peer_best") or {}).get("x_sgd") for r in mine])])
    return table(["workload", "best PyTorch / best JAX private step (> 1: JAX faster)", f"{torch_peer} / ours (torch)",
                  f"{jax_peer} / ours (JAX)", "× sgd: torch best", "× sgd: JAX best", f"× sgd: {torch_peer}",
                  f"× sgd: {jax_peer}"], out, "lrrrrrrr")


def goal_cell(entry: dict | None, key: str) -> str:
    """A study row's best private step (× sgd) or best per-sample method (× floor) against its goal: the paired
    interval's verdict, or, for an unpaired run, the ratio of medians marked as such."""
    if not entry:
        return "–"
    field = "x_sgd" if key == "private" else "ratio_to_floor"
    v, ci, verdict = entry.get(field), entry.get(f"{field}_ci95"), entry.get(f"{field}_verdict")
    if v is None:
        return "–"
    if verdict:
        return f"{v:.2f} [{ci[0]:.2f}, {ci[1]:.2f}] ({entry['method']}) **{verdict}**"
    bound = GOALS["private_over_sgd" if key == "private" else "per_sample_over_floor"][0]
    return f"{v:.2f} ({entry['method']}, unpaired{', above ' + num(bound) if v > bound else ''})"


def goals_at(timings: list[dict], batch_size: int) -> str:
    rows = [r for r in suite_rows(timings) if r["batch_size"] == batch_size]
    return table(["workload", "torch best private × sgd", "JAX best private × sgd", "torch best per-sample × floor",
                  "JAX best per-sample × floor"],
                 [[f"`{r['model']}`", goal_cell(r["torch"].get("private"), "private"),
                   goal_cell(r["jax"].get("private"), "private"), goal_cell(r["torch"].get("per_sample"), "per_sample"),
                   goal_cell(r["jax"].get("per_sample"), "per_sample")] for r in rows])
