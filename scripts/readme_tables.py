"""Print the README's markdown tables from committed results, so no number in them is typed by hand.

  python scripts/readme_tables.py per-sample paper/cpu             # ms (x floor) at B=64/256, peak MB at 256
  python scripts/readme_tables.py dp paper/cpu [--batch-sizes 64,256,1024]   # private steps, x own sgd
  python scripts/readme_tables.py versions OLD_DIR NEW_DIR [...]   # the same targets in two environments
  python scripts/readme_tables.py agreement paper/cpu-suite       # per workload: float64 errors, float32 flips
  python scripts/readme_tables.py suite paper/cpu-suite           # per workload: ms per step, x own sgd
  python scripts/readme_tables.py claims paper/cpu-suite          # the peer study's three claims, per workload
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from compare.benchmark.paired import GOALS
from compare.benchmark.records import load_results
from contract.peers import names as peer_names

# Rows in this order: our own methods, then the peers of contract.peers (registration order).
OWN_PER_SAMPLE_ORDER = {"torch": ("batched", "loop", "vmap", "compile", "per_layer"),
                        "jax": ("batched", "loop", "vmap", "vmap_nojit", "per_layer", "vmap_patches")}
OWN_DP_ORDER = ("sgd", "dp_sgd", "dp_ghost", "dp_bk")


def per_sample_order() -> dict[str, tuple[str, ...]]:
    return {fw: (*own, *peer_names(fw, "per_sample")) for fw, own in OWN_PER_SAMPLE_ORDER.items()}


def dp_order() -> tuple[str, ...]:
    return (*OWN_DP_ORDER, *peer_names(kind="dp"))


def load(path: Path) -> tuple[dict, dict]:
    data = load_results(path)
    return data.meta, {(r["framework"], r["method"], r["batch_size"]): r for r in data.timings}


def ok(r: dict | None) -> bool:
    return r is not None and r["status"] == "ok"


def cell(r: dict | None, floor: bool = True) -> str:
    if r is None:
        return "–"
    if not ok(r):
        return r["status"]
    x = r.get("ratio_to_floor")
    return f"{r['median_ms']:.1f}" + (f" ({x:.2f})" if floor and x is not None and r["method"] != "batched" else "")


def per_sample(path: Path, sizes: tuple[int, ...] = (64, 256)) -> str:
    _, t = load(path)
    head = "| framework | method | " + " | ".join(f"B={b} ms (× floor)" for b in sizes) + f" | peak MB at {sizes[-1]} |"
    lines = [head, "|" + "---|" * (3 + len(sizes))]
    order = per_sample_order()
    for fw, methods in order.items():
        for m in methods:
            rows = [t.get((fw, m, b)) for b in sizes]
            if not any(rows):
                continue
            peak = rows[-1].get("peak_mem_bytes") if ok(rows[-1]) else None
            lines.append(f"| {fw} | `{m}` | " + " | ".join(cell(r) for r in rows) +
                         f" | {peak / 1e6:.0f} |" if peak else f"| {fw} | `{m}` | " +
                         " | ".join(cell(r) for r in rows) + " | – |")
    floors = {fw: [t[(fw, 'per_layer', b)].get('floor_ms') for b in sizes if ok(t.get((fw, 'per_layer', b)))]
              for fw in order}
    lines.append("")
    lines.append("Floors (ms): " + "; ".join(f"{fw} " + " / ".join(f"{f:.1f}" for f in fl if f) for fw, fl in
                                             floors.items()))
    return "\n".join(lines)


def dp(path: Path, sizes: tuple[int, ...]) -> str:
    _, t = load(path)
    head = "| framework | step | " + " | ".join(f"B={b} ms (× sgd)" for b in sizes) + f" | peak × sgd at {sizes[-1]} |"
    lines = [head, "|" + "---|" * (3 + len(sizes))]
    for fw in ("torch", "jax"):
        for m in dp_order():
            rows = [t.get((fw, m, b)) for b in sizes]
            if not any(rows):
                continue
            cells = []
            for b, r in zip(sizes, rows):
                sgd = t.get((fw, "sgd", b))
                if ok(r) and ok(sgd):
                    cells.append(f"{r['median_ms']:.1f} ({r['median_ms'] / sgd['median_ms']:.2f})")
                else:
                    cells.append(cell(r, floor=False))
            last, sgd = rows[-1], t.get((fw, "sgd", sizes[-1]))
            peak = (f"{last['peak_mem_bytes'] / sgd['peak_mem_bytes']:.2f}" if ok(last) and ok(sgd)
                    and last.get("peak_mem_bytes") and sgd.get("peak_mem_bytes") else "–")
            lines.append(f"| {fw} | `{m}` | " + " | ".join(cells) + f" | {peak} |")
    return "\n".join(lines)


def versions(old: list[Path], new: list[Path], sizes: tuple[int, ...] = (64, 256)) -> str:
    """Median over the rounds of each environment; the rounds' spread in brackets."""
    def collect(dirs: list[Path]) -> tuple[dict, dict]:
        metas, runs = zip(*(load(d) for d in dirs))
        return metas[0]["versions"], runs

    vo, ro = collect(old)
    vn, rn = collect(new)
    lines = [f"old: python {vo['python']}, torch {vo['torch']}, jax {vo['jax']}, flax {vo['flax']}; "
             f"new: python {vn['python']}, torch {vn['torch']}, jax {vn['jax']}, flax {vn['flax']}", "",
             "| framework | target | " + " | ".join(f"B={b} old → new ms (new/old)" for b in sizes) + " |",
             "|" + "---|" * (2 + len(sizes))]

    def med(runs: tuple, key: tuple) -> tuple[float, float, float] | None:
        v = sorted(r[key]["median_ms"] for r in runs if ok(r.get(key)))
        return (v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2, v[0], v[-1]) if v else None

    for fw in ("torch", "jax"):
        for m in ("batched", "per_layer", "vmap", "sgd", "dp_bk"):
            cells = []
            for b in sizes:
                o, n = med(ro, (fw, m, b)), med(rn, (fw, m, b))
                cells.append(f"{o[0]:.1f} → {n[0]:.1f} ({n[0] / o[0]:.2f})" if o and n else "–")
            lines.append(f"| {fw} | `{m}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _agreement_reports(path: Path) -> dict[str, dict]:
    """{model: report} from DIR/results.json's agreement (or DIR/agreement.json)."""
    f = Path(path) / "results.json"
    data = load_results(f).agreement if f.is_file() else json.loads((Path(path) / "agreement.json").read_text())
    return data["by_model"] if "by_model" in data else {data.get("model", "seed_cnn"): data}


def agreement(path: Path) -> str:
    """Per workload: the largest float64 error of each framework (every method vs its loop, and vs the
    reference), torch vs JAX in float64, float32 on samples with no flip, flips and their explanation."""
    lines = ["| workload | B | float64 torch | float64 JAX | torch vs JAX (float64) | float32 torch / JAX, no flip "
             "| float32 flips (explained) | not applicable |", "|---|---:|---:|---:|---:|---|---|---|"]
    for model, rep in _agreement_reports(path).items():
        errs = rep["float64_max_rel_err"]
        fw = {f: max((v for k, v in errs.items() if k.startswith(f + "/") and " vs " not in k), default=None)
              for f in ("torch", "jax")}
        cross = max((v for k, v in errs.items() if " vs " in k), default=None)
        smooth = rep.get("smooth_max_rel_err", {})
        flips = {k: len(v) for k, v in rep.get("flipped_samples", {}).items() if v}
        explained = sum(e["explained"] for v in rep.get("explanations", {}).values() for e in v)
        na = ", ".join(f"{k.split('/')[0]} `{k.split('/')[1]}`" for k, r in rep.get("not_applicable", {}).items()
                       if r.startswith("not applicable"))
        flip_text = (", ".join(f"{k.split('/')[0]} {n}" for k, n in flips.items()) + f" ({explained} explained)"
                     if flips else "none")

        def e(v):
            return "–" if v is None else f"{v:.1e}"
        lines.append(f"| `{model}` | {rep['batch_size']} | {e(fw['torch'])} | {e(fw['jax'])} | {e(cross)} | "
                     f"{e(smooth.get('torch/float32'))} / {e(smooth.get('jax/float32'))} | {flip_text} | {na or '–'} |")
    return "\n".join(lines)


def suite(path: Path) -> str:
    from compare.benchmark.suite import markdown_tables, suite_rows

    return markdown_tables(suite_rows(load_results(path).timings))


def claims(path: Path) -> str:
    """Per workload, over B = 16..256 (min-max): JAX's best private step against the best PyTorch one (ours or
    Opacus'), each framework's best private step against its peer library, and the DP overhead (x own sgd) of
    the best private step of each framework and of each peer; then the goals at B = 256."""
    from compare.benchmark.suite import peer_heading, suite_rows

    torch_peer, jax_peer = peer_heading("torch"), peer_heading("jax")
    rows = suite_rows(load_results(path).timings)

    def rng(vals):
        v = [x for x in vals if x is not None]
        return "–" if not v else (f"{min(v):.2f}–{max(v):.2f}" if len(v) > 1 else f"{v[0]:.2f}")

    def best_torch(r):
        c = [x for x in ((r["torch"].get("private") or {}).get("ms"), (r["torch"].get("peer_best") or {}).get("ms")) if x]
        return min(c) if c else None

    lines = [f"| workload | best PyTorch / best JAX private step (>1: JAX faster) | {torch_peer} / ours (torch) "
             f"| {jax_peer} / ours (JAX) | x sgd: torch best | x sgd: JAX best | x sgd: {torch_peer} "
             f"| x sgd: {jax_peer} |",
             "|---|---|---|---|---|---|---|---|"]
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        jax_best = [(r["jax"].get("private") or {}).get("ms") for r in mine]
        lines.append("| `{}` | {} | {} | {} | {} | {} | {} | {} |".format(
            model,
            rng([bt / jb if bt and jb else None for bt, jb in zip(map(best_torch, mine), jax_best)]),
            rng([(r["torch"].get("peer_best") or {}).get("over_ours") for r in mine]),
            rng([(r["jax"].get("peer_best") or {}).get("over_ours") for r in mine]),
            rng([(r["torch"].get("private") or {}).get("x_sgd") for r in mine]),
            rng([(r["jax"].get("private") or {}).get("x_sgd") for r in mine]),
            rng([(r["torch"].get("peer_best") or {}).get("x_sgd") for r in mine]),
            rng([(r["jax"].get("peer_best") or {}).get("x_sgd") for r in mine])))
    lines += ["", "| workload | B=256: torch best private x sgd | JAX best private x sgd | torch best per-sample x floor "
              "| JAX best per-sample x floor |", "|---|---|---|---|---|"]
    for r in (r for r in rows if r["batch_size"] == 256):
        cells = []
        for key, fw, field in (("private", "torch", "x_sgd"), ("private", "jax", "x_sgd"),
                               ("per_sample", "torch", "ratio_to_floor"), ("per_sample", "jax", "ratio_to_floor")):
            e = r[fw].get(key) or {}
            v = e.get(field)
            ci, paired_verdict = (e.get("x_sgd_ci95"), e.get("x_sgd_verdict")) if key == "private" else (
                e.get("ratio_to_floor_ci95"), e.get("ratio_to_floor_verdict"))
            bound = GOALS["private_over_sgd" if key == "private" else "per_sample_over_floor"][0]
            if v is None:
                cells.append("–")
            elif paired_verdict:  # a paired run: the interval decides (met / missed / undecided)
                cells.append(f"{v:.2f} [{ci[0]:.2f}, {ci[1]:.2f}] ({e['method']}) **{paired_verdict}**")
            else:  # an unpaired run (schema 1): no interval, so no verdict
                cells.append(f"{v:.2f} ({e['method']}, unpaired){'' if v <= bound else ' above the goal'}")
        lines.append(f"| `{r['model']}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("table", choices=("per-sample", "dp", "versions", "agreement", "suite", "claims"))
    p.add_argument("dirs", nargs="+", type=Path)
    p.add_argument("--batch-sizes", default=None)
    p.add_argument("--old-rounds", type=int, default=1, help="versions: how many of DIRS (first) are old rounds")
    a = p.parse_args()
    sizes = tuple(int(b) for b in a.batch_sizes.split(",")) if a.batch_sizes else None
    if a.table == "per-sample":
        print(per_sample(a.dirs[0], sizes or (64, 256)))
    elif a.table == "dp":
        print(dp(a.dirs[0], sizes or (64, 256, 1024)))
    elif a.table == "agreement":
        print(agreement(a.dirs[0]))
    elif a.table == "suite":
        print(suite(a.dirs[0]))
    elif a.table == "claims":
        print(claims(a.dirs[0]))
    else:
        print(versions(a.dirs[:a.old_rounds], a.dirs[a.old_rounds:], sizes or (64, 256)))


if __name__ == "__main__":
    main()
