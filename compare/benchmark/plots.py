"""The benchmark's figures, one function per figure, drawn in ``compare.style`` from point records alone.

Each ``fig_*`` takes the axes to draw on and the records (``compare.benchmark.records``) of one workload;
``compare.benchmark.figures`` lays them out and saves them. Ratios (overhead, DP overhead) are the paired ones
where the records have them (median per-round ratio with its bootstrap 95% interval, drawn as error bars:
``compare.benchmark.paired``), else ratios of medians (unpaired results files, no interval).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Callable

import numpy as np

from compare import style
from compare.benchmark.floor import floor_ms
from compare.spec import DEFAULT_MODEL, check_model
from contract.peers import Marker
from contract.spec import storage_dtype  # the bytes a per-sample gradient is returned in

Value = Callable[[dict], "float | tuple[float, float, float] | None"]  # a record -> y, or (y, lo, hi)


def to_series(timings: list[dict], value: Value) -> list[style.Series]:
    """One ``Series`` per (framework, method) over the ok records, sorted by batch size; ``value`` returns y or
    (y, lo, hi) (a paired ratio with its interval)."""
    acc: dict[tuple[str, str], list[tuple[int, float, float, float]]] = defaultdict(list)
    for r in timings:
        v = value(r) if r["status"] == "ok" else None
        if v is None:
            continue
        y, lo, hi = v if isinstance(v, tuple) else (v, np.nan, np.nan)
        acc[(r["framework"], r["method"])].append((r["batch_size"], y, lo, hi))
    out = []
    for (fw, m), pts in sorted(acc.items()):
        b, y, lo, hi = (np.array(c, float) for c in zip(*sorted(pts)))
        has = not np.isnan(lo).any()
        out.append(style.Series(fw, m, b, y, lo if has else None, hi if has else None))
    return out


def paired_or_medians(timings: list[dict], baseline: str, key: Callable[[dict], tuple]) -> Value:
    """r -> (ratio, lo, hi) from r's paired ratio to ``baseline``, else r's median over the baseline's median
    (the baseline record found by ``key``), else None."""
    base = {key(r): r["median_ms"] for r in timings if r["method"] == baseline and r["status"] == "ok"}

    def ratio(r: dict):
        paired = (r.get("ratios") or {}).get(baseline)
        if paired:
            lo, hi = paired.get("ci95") or (np.nan, np.nan)
            return paired["median"], lo, hi
        b = base.get(key(r))
        return r["median_ms"] / b if b else None

    return ratio


def _key(r: dict) -> tuple:
    return r["framework"], r["batch_size"], r["dtype"]


def _num_params(timings: list[dict]) -> int:
    return check_model(timings[0].get("model") or DEFAULT_MODEL).num_params if timings else 0


def _item(timings: list[dict]) -> int:
    return np.dtype(storage_dtype(timings[0]["dtype"])).itemsize


def fig_time(ax, timings: list[dict], floor: dict | None, marks: dict[str, Marker]) -> list:
    """Median time per batch of every gradient method, the batched reference dashed, the floor dotted (a bar
    of its own for a single batch size). Returns the extra legend handles."""
    from matplotlib.lines import Line2D

    data = to_series(timings, lambda r: r["median_ms"])
    floors = []
    if floor:
        for s in to_series([r for r in timings if r["kind"] == "reference"], lambda r: r["median_ms"]):
            y = [floor_ms(t, int(n), _item(timings), floor["bytes_per_s"], _num_params(timings))
                 for n, t in zip(s.x, s.y)]
            floors.append(style.Series(s.framework, "floor", s.x, np.array(y)))
    extra = []
    if style.single_x(data):
        style.draw_bars(ax, data + floors, [*dict.fromkeys(s.method for s in data), "floor"] if floors else None)
    else:
        style.draw_lines(ax, data, marks)
        ax.set_yscale("log")
        for f in floors:
            ax.plot(f.x, f.y, color=style.color(f.framework), linestyle=":", linewidth=1.3)
        extra.append(Line2D([], [], color="0.3", linestyle="--", label="batched ref."))
    if floor and not style.single_x(data):
        extra.append(Line2D([], [], color="0.3", linestyle=":", linewidth=1.3,
                            label=f"floor ({floor['bytes_per_s'] / 1e9:.0f} GB/s)"))
    ax.set_ylabel("median time per batch (ms)")
    return extra


def fig_time_panels(axes, timings: list[dict], floor: dict | None, marks: dict[str, Marker]) -> list:
    """``fig_time`` split by framework: panel i holds framework i's methods, its reference and its floor."""
    extra: list = []
    for ax, fw in zip(axes, style.framework_order(r["framework"] for r in timings)):
        mine = [r for r in timings if r["framework"] == fw]
        extra = fig_time(ax, mine, floor, marks)
        ax.set_title(style.FRAMEWORK_NAMES.get(fw, fw), loc="left", color=style.color(fw), pad=2)
    return extra


def fig_overhead(ax, timings: list[dict], marks: dict[str, Marker]) -> list:
    """Each per-sample method over its own framework's batched reference (paired, with its interval)."""
    per = [r for r in timings if r["kind"] == "per_sample"]
    refs = [r for r in timings if r["kind"] == "reference"]
    style.series(ax, to_series(per, paired_or_medians(refs + per, "batched", _key)), marks, base=1.0)
    ax.axhline(1.0, color="0.5", linewidth=0.7)
    ax.set_ylabel("time / own batched reference (×)")
    return []


def fig_memory(ax, timings: list[dict], marks: dict[str, Marker]) -> list:
    """Peak memory above the post-import baseline (MB), with the per-sample output's own size."""
    from matplotlib.lines import Line2D

    data = to_series(timings, lambda r: r.get("peak_mem_bytes") and r["peak_mem_bytes"] / style.MB)
    output = _num_params(timings) * _item(timings) / style.MB  # MB per example of the (B, P) output
    if style.series(ax, data, marks):
        b = timings[0]["batch_size"]
        ax.axhline(b * output, color="0.2", linestyle="-.", linewidth=0.8)
    else:
        sizes = np.array(sorted({r["batch_size"] for r in timings}))
        ax.plot(sizes, sizes * output, color="0.2", linestyle="-.", linewidth=0.8)
    ax.set_ylabel("peak memory above baseline (MB)")
    return [Line2D([], [], color="0.2", linestyle="-.", linewidth=0.8, label="output size")]


def fig_agreement(ax, agreement: dict) -> None:
    """Each framework's float32 per-parameter error against the float64 reference, and the tolerance."""
    results, tol = agreement["results"], agreement["tolerance"].get("float32")
    keys = [k for k in results if k.endswith("/float32")]
    width = 0.8 / max(len(keys), 1)
    names = list(dict.fromkeys(row["param"] for k in keys for row in results[k]))  # the workload's, in order
    x = np.arange(len(names))
    for i, key in enumerate(sorted(keys, key=lambda k: style.framework_order([k.split("/")[0], *style.COLORS])
                                   .index(k.split("/")[0]))):
        fw = key.split("/")[0]
        err = {row["param"]: row["max_rel_err"] for row in results[key]}
        vals = [max(err.get(p, np.nan), 1e-18) for p in names]
        ax.bar(x + (i - (len(keys) - 1) / 2) * width, vals, width, color=style.color(fw),
               label=style.FRAMEWORK_NAMES.get(fw, fw))
    if tol:
        ax.axhline(tol, color="0.2", linestyle="--", linewidth=0.8, label=f"tolerance {tol:g}")
    ax.set_yscale("log")
    ax.set_xticks(x, [p.replace(".weight", ".w").replace(".bias", ".b") for p in names], rotation=45, ha="right")
    ax.set_ylabel("max relative error vs float64")
    ax.grid(axis="x", visible=False)


def fig_dp(axes, timings: list[dict], marks: dict[str, Marker]) -> list:
    """Top: every step's time (non-private ``sgd`` dashed); bottom: each private step over its framework's
    ``sgd`` at the same batch size (the DP overhead, paired with its interval), one series per step."""
    from matplotlib.lines import Line2D

    top, bottom = axes
    order = sorted({r["method"] for r in timings}, key=lambda m: (m != "sgd", m))
    style.series(top, to_series(timings, lambda r: r["median_ms"]), marks, order)
    top.set_ylabel("median time per step (ms)")
    private = [r for r in timings if r["method"] != "sgd"]
    bars = style.series(bottom, to_series(private, paired_or_medians(timings, "sgd", _key)), marks,
                        [m for m in order if m != "sgd"], base=1.0)
    bottom.axhline(1.0, color="0.5", linewidth=0.7)
    bottom.set_ylabel("private / SGD step (×)")
    return [] if bars else [Line2D([], [], color="0.3", linestyle="--", label="non-private")]


def log2_batch_axis(ax, timings: list[dict]) -> None:
    from matplotlib.ticker import FixedLocator, NullLocator

    ax.set_xscale("log", base=2)
    sizes = sorted({r["batch_size"] for r in timings})
    ax.xaxis.set_major_locator(FixedLocator(sizes))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([str(s) for s in sizes])
    ax.set_xlabel("batch size B")
