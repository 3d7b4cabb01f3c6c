"""Paper figures from a results file alone: ``python -m compare.figures DIR`` (or a JSON file).

Reads DIR/results.json (``compare.run``) or a ``pytest --benchmark --benchmark-json`` file and writes PDF and
PNG into DIR/figures/ (the file's directory for a file), sized for one paper column (3.3 in):
  1. time_per_batch:   median time per batch vs batch size, log-log, every method, the floors dotted; one panel
                       per framework (shared axes), so each of the ~13 series stays readable at column width;
  2. overhead:         per-sample time over the same framework's batched reference vs batch size;
  3. peak_memory:      peak memory above the post-import baseline vs batch size, with the output's own size;
  4. agreement:        each framework's float32 per-parameter error against the float64 reference;
  5. dp_overhead:      one training step, DP-SGD vs non-private SGD, vs batch size (top), and their ratio, the
                       DP overhead (bottom). Figures 1-3 are about gradients and leave the DP steps out.
Colours are per framework, markers per method (``contract.peers``), identical in every figure; baselines (the batched reference,
the non-private step) are dashed. Ratios (figures 2 and 5) are the paired ones (median per-round ratio,
``compare.benchmark.pair``) where the records have them, else ratios of medians (unpaired results files).

Several workloads in one file (``compare.run --model a,b`` or ``--suite``): figures 1-5 per workload in
figures/<model>/, and across workloads (``compare.benchmark.suite``): 6. suite_steps, small multiples of ms per
step (sgd, best private, best peer) per workload; suite_table.tex (booktabs, for ``\\input``) and
suite_tables.md (the README's tables).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from compare.logs import setup_logging
from compare.paths import output_dir
from compare.benchmark.floor import floor_ms
from compare.benchmark.records import ResultsFile, check_record, results_from_json
from compare.spec import DEFAULT_MODEL, check_model
from contract.peers import Marker, markers

log = logging.getLogger("compare.benchmark.figures")

COLUMN_WIDTH_IN = 3.3
COLORS = {"torch": "#d9480f", "jax": "#1c7ed6"}  # PyTorch orange / JAX blue
# Markers: one per method and peer, from contract.peers; a method registered nowhere (a results file of other
# code) gets one of these, which no registered method uses: an n-armed asterisk.
SPARE_MARKERS = tuple((n, 2, 0) for n in (5, 7, 8, 9, 10))
BASELINES = ("batched", "sgd")  # drawn dashed: what the other lines are measured against
RC = {"font.size": 7, "axes.titlesize": 7, "axes.labelsize": 7, "legend.fontsize": 5.5, "xtick.labelsize": 6,
      "ytick.labelsize": 6, "lines.linewidth": 0.8, "lines.markersize": 3.2, "axes.grid": True,
      "grid.alpha": 0.3, "grid.linewidth": 0.5, "savefig.bbox": "tight", "savefig.pad_inches": 0.02}


def load_results(path: Path) -> ResultsFile:
    """``results.json`` (any readable schema version, ``compare.benchmark.records``); a pytest-benchmark JSON
    converted to the same shape.
    ``ValueError`` naming the file when it is missing, not JSON (e.g. cut off by a kill) or of another kind."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file (give a compare.run results directory or a results JSON "
                         "file)") from None
    except IsADirectoryError:
        raise ValueError(f"{path} is a directory, not a results file") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a JSON text file") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}); a file cut "
                         "off by an interrupted write? compare.run writes results.json atomically; its points "
                         "are in points.jsonl") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object with 'timings', got a JSON {type(data).__name__}")
    if "timings" in data:
        return results_from_json(data, str(path))
    if "benchmarks" in data:
        return _from_pytest_benchmark(data, str(path))
    raise ValueError(f"{path}: neither a compare.run results.json (no 'timings') nor a pytest-benchmark JSON "
                     "(no 'benchmarks')")


def _from_pytest_benchmark(data: dict, where: str) -> ResultsFile:
    timings = []
    for b in data["benchmarks"]:
        info, stats = b.get("extra_info", {}), b["stats"]
        if "framework" not in info or "pair_group" in info:
            continue  # a benchmark of some other suite, or a pair group (its ratios are in extra_info)
        timings.append({**info, "median_ms": stats["median"] * 1e3, "iqr_ms": stats["iqr"] * 1e3,
                        "min_ms": stats["min"] * 1e3, "repeats": stats["rounds"], "compile_ms": None,
                        "first_call_ms": None, "peak_mem_bytes": None, "status": "ok", "reason": ""})
    if not timings:
        raise ValueError("the pytest-benchmark JSON has no benchmark of this repo (extra_info without 'framework')")
    first = data["benchmarks"][0].get("extra_info", {})
    meta = {"device": data.get("machine_info", {}).get("cpu", {}).get("brand_raw", "?"),
            "versions": first.get("versions", {}), "source": "pytest-benchmark"}
    return ResultsFile(meta=meta, agreement=None, floor=None,
                       timings=[check_record(r, f"{where}: benchmark {i}") for i, r in enumerate(timings)])


def _markers(methods: set[str]) -> dict[str, Marker]:
    known, spare = markers(), iter(SPARE_MARKERS)
    return {m: known.get(m) or next(spare, "o") for m in sorted(methods)}


def _caption(fig, ax, meta: dict, dtype: str, model: str = DEFAULT_MODEL) -> None:
    """Workload, device and versions in one small line under everything the axes draw (labels included)."""
    v = meta.get("versions", {})
    parts = [model, meta.get("device", "?"), dtype] + [f"{k} {v[k]}" for k in ("torch", "jax", "flax") if v.get(k)]
    box = ax.get_tightbbox(fig.canvas.get_renderer()).transformed(fig.transFigure.inverted())
    fig.text(box.x0, box.y0 - 0.01, "; ".join(parts), fontsize=4.5, color="0.35", ha="left", va="top")


def _series(timings: list[dict], value) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """(framework, method) -> (batch sizes, values), ok points only, sorted by batch size."""
    acc: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
    for r in timings:
        v = value(r) if r["status"] == "ok" else None
        if v is not None:
            acc[(r["framework"], r["method"])].append((r["batch_size"], v))
    return {k: tuple(np.array(c) for c in zip(*sorted(pts))) for k, pts in acc.items()}


def _fill(framework: str) -> str:
    """Filled markers for torch, hollow for JAX: the frameworks stay apart where lines overlap or in grey print."""
    return "none" if framework == "jax" else "full"


def _legend(ax, frameworks: list[str], markers: dict[str, str], extra: list | None = None) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=COLORS.get(fw, "k"), marker="o", fillstyle=_fill(fw), label=fw)
               for fw in frameworks]
    handles += [Line2D([], [], color="0.3", marker=mk, linestyle="none", label=m) for m, mk in markers.items()]
    handles += extra or []
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, handlelength=1.5,
              borderaxespad=0.0)


def _plot_lines(ax, series, markers) -> list[str]:
    for (fw, m), (b, v) in sorted(series.items()):
        ax.plot(b, v, color=COLORS.get(fw, "k"), marker=markers[m], linestyle="--" if m in BASELINES else "-",
                fillstyle=_fill(fw))
    return sorted({fw for fw, _ in series})


def _plain_log_y(ax) -> None:
    """Log y ticks as plain numbers (2, 5, 10, 20 ... rather than 2x10^0), minor ones only over short ranges."""
    from matplotlib.ticker import FuncFormatter

    lo, hi = ax.get_ylim()
    short = hi / lo < 30

    def minor(v: float, _pos: int) -> str:
        mantissa = round(v / 10 ** np.floor(np.log10(v)))
        return f"{v:g}" if short and mantissa in (2, 5) else ""

    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(minor))


def _log2_batch_axis(ax, timings) -> None:
    from matplotlib.ticker import FixedLocator, NullLocator

    ax.set_xscale("log", base=2)
    sizes = sorted({r["batch_size"] for r in timings})
    ax.xaxis.set_major_locator(FixedLocator(sizes))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([str(s) for s in sizes])
    ax.set_xlabel("batch size B")


def _num_params(timings: list[dict]) -> int:
    return check_model(timings[0].get("model") or DEFAULT_MODEL).num_params if timings else 0


def fig_time(ax, timings, floor, markers, framework_legend: bool = True) -> list:
    from matplotlib.lines import Line2D

    fws = _plot_lines(ax, _series(timings, lambda r: r["median_ms"]), markers)
    extra = []
    if floor:
        refs = _series([r for r in timings if r["kind"] == "reference"], lambda r: r["median_ms"])
        for (fw, _), (b, v) in refs.items():
            item = np.dtype(timings[0]["dtype"]).itemsize
            ax.plot(b, [floor_ms(t, int(n), item, floor["bytes_per_s"], _num_params(timings)) for n, t in zip(b, v)],
                    color=COLORS.get(fw, "k"), linestyle=":", linewidth=1.4)
        extra.append(Line2D([], [], color="0.3", linestyle=":", linewidth=1.4,
                            label=f"floor ({floor['bytes_per_s'] / 1e9:.0f} GB/s)"))
    extra.append(Line2D([], [], color="0.3", linestyle="--", label="batched ref."))
    ax.set_yscale("log")
    ax.set_ylabel("median time per batch (ms)")
    _legend(ax, fws if framework_legend else [], markers, extra)
    return fws


def fig_time_panels(axes, timings, floor, markers) -> None:
    """``fig_time`` split by framework: panel i holds framework i's methods, its reference and its floor."""
    fws = sorted({r["framework"] for r in timings}, key=lambda fw: list(COLORS).index(fw) if fw in COLORS else 99)
    for ax, fw in zip(axes, fws):
        mine = [r for r in timings if r["framework"] == fw]
        fig_time(ax, mine, floor, {m: mk for m, mk in markers.items() if m in {r["method"] for r in mine}},
                 framework_legend=False)
        ax.set_title(fw, loc="left", fontsize=7, color=COLORS.get(fw, "k"), pad=2)


def fig_overhead(ax, timings, markers) -> None:
    refs = {(r["framework"], r["batch_size"], r["dtype"]): r["median_ms"]
            for r in timings if r["kind"] == "reference" and r["status"] == "ok"}
    per = [r for r in timings if r["kind"] == "per_sample"]

    def ratio(r):
        paired = (r.get("ratios") or {}).get("batched")  # median per-round ratio (compare.benchmark.pair)
        if paired:
            return paired["median"]
        ref = refs.get((r["framework"], r["batch_size"], r["dtype"]))
        return r["median_ms"] / ref if ref else None

    fws = _plot_lines(ax, _series(per, ratio), markers)
    ax.axhline(1.0, color="0.5", linewidth=0.7)
    ax.set_yscale("log")
    ax.set_ylabel("time / own batched reference (x)")
    _legend(ax, fws, {m: mk for m, mk in markers.items() if m != "batched"})


def fig_memory(ax, timings, markers) -> None:
    from matplotlib.lines import Line2D

    fws = _plot_lines(ax, _series(timings, lambda r: r.get("peak_mem_bytes") and r["peak_mem_bytes"] / 2**20),
                      markers)
    sizes = np.array(sorted({r["batch_size"] for r in timings}))
    item = np.dtype(timings[0]["dtype"]).itemsize
    ax.plot(sizes, sizes * _num_params(timings) * item / 2**20, color="0.2", linestyle="-.", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_ylabel("peak memory above baseline (MiB)")
    _legend(ax, fws, markers, [Line2D([], [], color="0.2", linestyle="-.", linewidth=0.8, label="output size")])


def fig_agreement(ax, agreement: dict) -> None:
    results, tol = agreement["results"], agreement["tolerance"].get("float32")
    keys = [k for k in results if k.endswith("/float32")]
    width = 0.8 / max(len(keys), 1)
    names = list(dict.fromkeys(row["param"] for k in keys for row in results[k]))  # the workload's, in order
    x = np.arange(len(names))
    for i, key in enumerate(keys):
        fw = key.split("/")[0]
        err = {row["param"]: row["max_rel_err"] for row in results[key]}
        vals = [max(err.get(p, np.nan), 1e-18) for p in names]
        ax.bar(x + (i - (len(keys) - 1) / 2) * width, vals, width, color=COLORS.get(fw, "0.5"), label=fw)
    if tol:
        ax.axhline(tol, color="0.2", linestyle="--", linewidth=0.8, label=f"tolerance {tol:g}")
    ax.set_yscale("log")
    ax.set_xticks(x, [p.replace(".weight", ".w").replace(".bias", ".b") for p in names], rotation=45,
                  ha="right")
    ax.set_ylabel("max relative error vs float64")
    ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    ax.grid(axis="x", visible=False)


def fig_dp(axes, timings, markers) -> None:
    """Top: every step's time (non-private ``sgd`` dashed); bottom: each private step over its framework's
    ``sgd`` at the same batch size (the DP overhead), one series per clipping strategy and peer."""
    from matplotlib.lines import Line2D

    top, bottom = axes
    steps = {m: markers[m] for m in sorted({r["method"] for r in timings}, key=lambda m: (m != "sgd", m))}
    fws = _plot_lines(top, _series(timings, lambda r: r["median_ms"]), steps)
    top.set_yscale("log")
    top.set_ylabel("median time per step (ms)")
    _legend(top, fws, steps, [Line2D([], [], color="0.3", linestyle="--", label="non-private")])
    sgd = {(r["framework"], r["batch_size"], r["dtype"]): r["median_ms"]
           for r in timings if r["method"] == "sgd" and r["status"] == "ok"}

    def ratio(r):
        paired = (r.get("ratios") or {}).get("sgd")  # median per-round ratio (compare.benchmark.pair)
        if paired:
            return paired["median"]
        base = sgd.get((r["framework"], r["batch_size"], r["dtype"]))
        return r["median_ms"] / base if base else None

    _plot_lines(bottom, _series([r for r in timings if r["method"] != "sgd"], ratio), steps)
    bottom.axhline(1.0, color="0.5", linewidth=0.7)
    bottom.set_yscale("log")
    bottom.set_ylabel("private / SGD step (x)")


def _agreement_of(agreement: dict | None, model: str, several: bool) -> dict | None:
    """A workload's agreement report from results.json's ``agreement`` (one report, or ``by_model``)."""
    if not agreement:
        return None
    if "by_model" in agreement:
        return agreement["by_model"].get(model)
    return agreement if not several or agreement.get("model", DEFAULT_MODEL) == model else None


def make_figures(path: Path, out_dir: Path | None = None) -> list[Path]:
    """Draw every figure the file has data for; returns the written paths (PDF and PNG of each, and the suite's
    tables when the file holds several workloads)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from compare.benchmark.suite import fig_suite, models_of, write_tables

    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    loaded = load_results(path)
    data = {"meta": loaded.meta, "agreement": loaded.agreement, "floor": loaded.floor, "timings": loaded.timings}
    out_dir = Path(out_dir) if out_dir else path.parent / "figures"
    out_dir.mkdir(parents=True, exist_ok=True)
    timings, meta = loaded.timings, loaded.meta
    models = models_of(timings) or [DEFAULT_MODEL]
    if len(models) == 1:
        return _figure_set(path, {**data, "agreement": _agreement_of(data.get("agreement"), models[0], False)},
                           out_dir)
    written = []
    for model in models:
        mine = [r for r in timings if (r.get("model") or DEFAULT_MODEL) == model]
        written += _figure_set(path, {**data, "timings": mine,
                                      "agreement": _agreement_of(data.get("agreement"), model, True)},
                               out_dir / model)
    if any(r["kind"] == "dp" and r["status"] == "ok" for r in timings):
        with plt.rc_context(RC):
            fig = plt.figure(figsize=(COLUMN_WIDTH_IN * 2, 3.2))  # two columns: six panels stay legible
            fig_suite(fig, timings, COLORS)
            for ax in fig.axes:
                if ax.get_visible():
                    _plain_log_y(ax)
            fig.tight_layout(h_pad=0.6, w_pad=0.4)
            for ext in ("pdf", "png"):
                target = out_dir / f"suite_steps.{ext}"
                fig.savefig(target, dpi=300)
                written.append(target)
            plt.close(fig)
        written += write_tables(timings, meta, out_dir)
    return written


def _figure_set(path: Path, data: dict, out_dir: Path) -> list[Path]:
    """Figures 1-5 of one workload's records into ``out_dir``."""
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    timings, meta = data["timings"], data.get("meta", {})
    grads = [r for r in timings if r["kind"] != "dp"]
    dp = [r for r in timings if r["kind"] == "dp"]
    ok, dp_ok = [r for r in grads if r["status"] == "ok"], [r for r in dp if r["status"] == "ok"]
    markers = _markers({r["method"] for r in timings})  # every figure's legend then lists only its own methods
    grad_markers = {m: mk for m, mk in markers.items() if m in {r["method"] for r in grads}}
    dtype = timings[0]["dtype"] if timings else "float32"
    # name -> (draw(axes), the ok records whose batch sizes label the x axis (None: no batch axis), panels)
    jobs = {}
    n_fw = len({r["framework"] for r in ok})
    if ok:
        jobs["time_per_batch"] = (lambda axes: fig_time_panels(axes, grads, data.get("floor"), grad_markers), ok,
                                  n_fw)
        jobs["overhead"] = (lambda axes: fig_overhead(axes[0], grads, grad_markers), ok, 1)
    if any(r.get("peak_mem_bytes") is not None for r in ok):
        jobs["peak_memory"] = (lambda axes: fig_memory(axes[0], grads, grad_markers), ok, 1)
    if data.get("agreement"):
        jobs["agreement"] = (lambda axes: fig_agreement(axes[0], data["agreement"]), None, 1)
    if "sgd" in {r["method"] for r in dp_ok} and len({r["method"] for r in dp_ok}) > 1:
        jobs["dp_overhead"] = (lambda axes: fig_dp(axes, dp, markers), dp_ok, 2)
    written = []
    with plt.rc_context(RC):
        for name, (draw, batch_records, panels) in jobs.items():
            fig, axes = plt.subplots(panels, 1, sharex=True, sharey=name == "time_per_batch", squeeze=False,
                                     figsize=(COLUMN_WIDTH_IN * 0.72, 2.2 + 1.4 * (panels - 1)))
            axes = list(axes[:, 0])
            draw(axes)
            for ax in axes if batch_records else ():
                _log2_batch_axis(ax, batch_records)
                _plain_log_y(ax)
                ax.label_outer()  # stacked panels: batch sizes and their label under the bottom one only
            _caption(fig, axes[-1], meta, dtype, (timings[0].get("model") if timings else None) or DEFAULT_MODEL)
            for ext in ("pdf", "png"):
                target = out_dir / f"{name}.{ext}"
                fig.savefig(target, dpi=300)
                written.append(target)
            plt.close(fig)
    skipped = {"time_per_batch", "overhead", "peak_memory", "agreement", "dp_overhead"} - set(jobs)
    if skipped:
        log.info("no data in %s for: %s", path, ", ".join(sorted(skipped)))
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m compare.figures", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", type=Path, help="results directory (with results.json) or a JSON file")
    p.add_argument("--out", type=output_dir, help="output directory (default: <dir>/figures)")
    a = p.parse_args(argv)
    setup_logging()
    try:
        written = make_figures(a.path, a.out)
    except (OSError, ValueError) as err:
        log.error("%s", err)
        return 2
    except (KeyError, TypeError) as err:  # a record without a field the figures need
        log.error("%s: a record lacks %s or has the wrong type: not a compare.run results file?", a.path, err)
        return 2
    for w in written:
        log.info("wrote %s", w)
    return 0


if __name__ == "__main__":
    sys.exit(main())
