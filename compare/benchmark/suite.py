"""The study across workloads (``compare.run --suite fast-dpsgd``): one row per (workload, batch size), its
tables (LaTeX booktabs for a paper, markdown for the results document) and its small-multiples figure.

A row holds, per framework, the non-private step (``sgd``), the best private step of our own strategies
(``dp_sgd`` / ``dp_ghost`` / ``dp_bk``, whichever is fastest at that point: named in the row), the framework's
peer steps (``contract.peers``: Opacus' hooks + DPOptimizer and ghost clipping; jax-privacy), and the
best per-sample method with its ratio to the floor. Ratios: ``x sgd`` = a private step over the same
framework's sgd at the same point (the DP overhead of Subramani et al. 2021); ``peer / ours`` = the best peer
step over our best private step of the same framework. Every number is a median of one run; nothing is
interpolated: a point that did not run is a dash (the LaTeX tables, ``compare.benchmark.latex_tables``, name why). A ratio timed as a pair (``compare.benchmark.pair``) is the
median of per-round ratios and carries its bootstrap 95% interval (``ci95``) and goal verdict (met / missed /
undecided); the tables print both. Records of unpaired runs (schema version 1) give the ratio of medians alone.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from compare.formats import ms, num
from compare.spec import DEFAULT_MODEL
from contract.peers import library
from contract.peers import names as peer_names

OWN_PRIVATE: tuple[str, ...] = ("dp_sgd", "dp_ghost", "dp_bk")


def _model(r: dict) -> str:
    return r.get("model") or DEFAULT_MODEL


def _ok(r: dict) -> bool:
    return r.get("status") == "ok" and r.get("median_ms") is not None


def models_of(timings: list[dict]) -> list[str]:
    """The workloads of a run, in run order."""
    return list(dict.fromkeys(_model(r) for r in timings))


def _best(records: list[dict]) -> dict | None:
    ok = [r for r in records if _ok(r)]
    return min(ok, key=lambda r: r["median_ms"]) if ok else None


def _ratio(record: dict, baseline: str, unpaired: float | None) -> dict:
    """``{"x": ratio, "ci95": [lo, hi], "verdict": ...}`` from the record's paired ratio to ``baseline``; only
    ``{"x": unpaired}`` for a record without one (an unpaired run). Key names as ``suite_rows`` stores them."""
    e = (record.get("ratios") or {}).get(baseline)
    if not e:
        return {"x": unpaired}
    return {"x": e["median"], "ci95": e["ci95"], **({"verdict": e["verdict"]} if "verdict" in e else {})}


def _x_sgd(record: dict, sgd: dict | None) -> dict:
    return _named(_ratio(record, "sgd", record["median_ms"] / sgd["median_ms"] if sgd else None), "x_sgd")


def _named(ratio: dict, name: str) -> dict:
    """``{name: x, name_ci95: ..., name_verdict: ...}``, the last two only where the ratio has them (paired)."""
    return {name: ratio["x"], **{f"{name}_{k}": ratio[k] for k in ("ci95", "verdict") if k in ratio}}


def suite_rows(timings: list[dict]) -> list[dict]:
    """One dict per (model, batch size) with per-framework ``sgd_ms``, ``private`` (best own: method, ms,
    x_sgd), ``peers`` {method: ms}, ``peer_best`` (method, ms, x_sgd, over_ours) and ``per_sample`` (best
    method, ms, ratio_to_floor); keys absent where the run has no such point."""
    by: dict[tuple[str, int, str], list[dict]] = defaultdict(list)
    for r in timings:
        by[(_model(r), r["batch_size"], r["framework"])].append(r)
    order = models_of(timings)
    rows = []
    for model, bsz in sorted({(m, b) for m, b, _ in by}, key=lambda k: (order.index(k[0]), k[1])):
        row: dict = {"model": model, "batch_size": bsz}
        for fw in ("torch", "jax"):
            recs = by.get((model, bsz, fw), [])
            dp = {r["method"]: r for r in recs if r["kind"] == "dp" and _ok(r)}
            sgd = dp.get("sgd")
            entry: dict = {"sgd_ms": sgd["median_ms"] if sgd else None}
            own = _best([dp[m] for m in OWN_PRIVATE if m in dp])
            if own:
                entry["private"] = {"method": own["method"], "ms": own["median_ms"],
                                    **_x_sgd(own, sgd)}
            peers = peer_names(fw, "dp")
            entry["peers"] = {m: dp[m]["median_ms"] for m in peers if m in dp}
            peer = _best([dp[m] for m in peers if m in dp])
            if peer:
                over = _ratio(peer, own["method"], peer["median_ms"] / own["median_ms"]) if own else {"x": None}
                entry["peer_best"] = {"method": peer["method"], "ms": peer["median_ms"],
                                      **_x_sgd(peer, sgd),
                                      **_named(over, "over_ours")}
            ps = _best([r for r in recs if r["kind"] == "per_sample"])
            if ps:
                floor = _ratio(ps, "floor", ps.get("ratio_to_floor"))
                entry["per_sample"] = {"method": ps["method"], "ms": ps["median_ms"],
                                       **_named(floor, "ratio_to_floor")}
            row[fw] = entry
        rows.append(row)
    return rows




def _x(value: float | None, ci95: list[float] | None = None, verdict: str | None = None) -> str:
    """``1.22x`` (unpaired), ``1.22x [1.18, 1.26]`` or ``1.22x [1.18, 1.26] met``."""
    text = f"{num(value, '.2f')}x"
    if ci95:
        text += f" [{ci95[0]:.2f}, {ci95[1]:.2f}]"
    return text + (f" {verdict}" if verdict else "")


def _cells(entry: dict) -> list[str]:
    priv, peer, ps = entry.get("private"), entry.get("peer_best"), entry.get("per_sample")
    cells = [ms(entry.get("sgd_ms"))]
    if priv:
        x = _x(priv["x_sgd"], priv.get("x_sgd_ci95"), priv.get("x_sgd_verdict"))
        cells.append(f"{ms(priv['ms'])} ({x}, {priv['method']})")
    else:
        cells.append("-")
    cells.append(f"{ms(peer['ms'])} ({_x(peer['x_sgd'], peer.get('x_sgd_ci95'))})" if peer else "-")
    cells.append(f"{ps['method']} {_x(ps['ratio_to_floor'], ps.get('ratio_to_floor_ci95'), ps.get('ratio_to_floor_verdict'))}"
                 if ps else "-")
    return cells


def peer_heading(framework: str) -> str:
    """A table's name for ``framework``'s best peer step: its peer libraries, "best" when it has several steps."""
    return library(framework) + (" best" if len(peer_names(framework, "dp")) > 1 else "")


def markdown_tables(rows: list[dict]) -> str:
    """One markdown table per workload: ms per step and x own sgd, for both frameworks and their peers."""
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        out += [f"**{model}**", "",
                f"| B | torch sgd ms | torch best private (x sgd) | {peer_heading('torch')} (x sgd) "
                f"| torch best per-sample / floor | JAX sgd ms | JAX best private (x sgd) "
                f"| {peer_heading('jax')} (x sgd) | JAX best per-sample / floor |",
                "|---:|---:|---|---|---|---:|---|---|---|"]
        for r in (r for r in rows if r["model"] == model):
            out.append("| " + " | ".join([str(r["batch_size"]), *_cells(r["torch"]), *_cells(r["jax"])]) + " |")
        out.append("")
    return "\n".join(out)


def fig_suite(fig, timings: list[dict]) -> list:
    """Small multiples: one panel per workload, ms per step vs B (log-log): each framework's sgd (dashed), best
    own private step (solid) and best peer step (dotted), in ``compare.style``'s colours. Returns the legend."""
    from matplotlib.lines import Line2D

    from compare import style

    rows = suite_rows(timings)
    models = list(dict.fromkeys(r["model"] for r in rows))
    ncols = 3 if len(models) > 4 else 2
    nrows = -(-len(models) // ncols)
    axes = fig.subplots(nrows, ncols, sharex=True, squeeze=False)
    styles = {"sgd": ("--", "SGD"), "private": ("-", "best private (ours)"), "peer": (":", "best peer")}
    for ax, model in zip(axes.flat, models):
        mine = [r for r in rows if r["model"] == model]
        b = [r["batch_size"] for r in mine]
        for fw in ("torch", "jax"):
            series = {"sgd": [r[fw].get("sgd_ms") for r in mine],
                      "private": [(r[fw].get("private") or {}).get("ms") for r in mine],
                      "peer": [(r[fw].get("peer_best") or {}).get("ms") for r in mine]}
            for key, ys in series.items():
                pts = [(x, y) for x, y in zip(b, ys) if y is not None]
                if pts:
                    ax.plot(*zip(*pts), color=style.color(fw), linestyle=styles[key][0], marker="o",
                            markersize=2, fillstyle=style.fill(fw))
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(model, fontsize=6.5, pad=2)
        ax.set_xticks(b, [str(x) for x in b])
        ax.minorticks_off()
    for ax in axes.flat[len(models):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("ms per step")
    for ax in axes[-1, :]:
        ax.set_xlabel("batch size B")
    extra = [Line2D([], [], color="0.3", linestyle=ls, label=label) for ls, label in styles.values()]
    return style.handles(["torch", "jax"], None, extra)


def write_tables(timings: list[dict], meta: dict, out_dir: Path, name: str, markdown: bool = True) -> list[Path]:
    """Into ``out_dir``: the LaTeX tables (``compare.benchmark.latex_tables``) the records have data for:
    ``suite_table.tex`` (steps) and ``per_sample_table.tex``, labelled ``tab:steps:<name>`` and
    ``tab:per-sample:<name>``; with ``markdown``, ``suite_tables.md`` (one markdown table per workload) beside the
    steps table."""
    from compare.benchmark import latex_tables as lt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if lt.has_steps(timings):
        steps = out_dir / "suite_table.tex"
        steps.write_text(lt.steps_table(timings, meta, f"tab:steps:{name}"))
        written.append(steps)
        if markdown:
            md = out_dir / "suite_tables.md"
            md.write_text(markdown_tables(suite_rows(timings)))
            written.append(md)
    if lt.has_per_sample(timings):
        per = out_dir / "per_sample_table.tex"
        per.write_text(lt.per_sample_table(timings, meta, f"tab:per-sample:{name}"))
        written.append(per)
    return written
