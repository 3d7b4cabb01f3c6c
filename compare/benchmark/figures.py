"""Paper figures from a results file alone: ``python -m compare.figures DIR`` (or a JSON file).

Reads DIR/results.json (``compare.run``) or a ``pytest --benchmark --benchmark-json`` file and writes PDF and
PNG into DIR/figures/ (the file's directory for a file), one paper column wide (3.3 in), in ``compare.style``:
  1. time_per_batch:   median time per batch vs batch size, log-log, every method, the floors dotted; one panel
                       per framework (shared axes), so each of the ~13 series stays readable at column width;
  2. overhead:         per-sample time over the same framework's batched reference vs batch size;
  3. peak_memory:      peak memory (MB) above the post-import baseline vs batch size, with the output's own size;
  4. agreement:        each framework's float32 per-parameter error against the float64 reference;
  5. dp_overhead:      one training step, DP-SGD vs non-private SGD, vs batch size (top), and their ratio, the
                       DP overhead (bottom). Figures 1-3 are about gradients and leave the DP steps out.
A run of a single batch size draws bars (one group per method) instead of lines. Ratios (figures 2 and 5) are
the paired ones with their 95% interval as error bars where the records have them (``compare.benchmark.plots``).

Several workloads in one file (``compare.run --model a,b`` or ``--suite``): figures 1-5 per workload in
figures/<model>/, and across workloads (``compare.benchmark.suite``): 6. suite_steps, small multiples of ms per
step (sgd, best private, best peer) per workload. Every results file also gets its tables
(``compare.benchmark.suite.write_tables``): suite_table.tex and per_sample_table.tex (LaTeX floats for ``\\input``);
a file of several workloads also suite_tables.md (markdown).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from compare import style
from compare.benchmark import plots
from compare.benchmark.records import ResultsFile, check_record, results_from_json
from compare.logs import setup_logging
from compare.paths import output_dir
from compare.spec import DEFAULT_MODEL

log = logging.getLogger("compare.benchmark.figures")
# name -> what the figure shows (its title after the workload)
TITLES: dict[str, str] = {"time_per_batch": "per-sample gradients, time per batch",
                          "overhead": "per-sample gradients over the batched gradient",
                          "peak_memory": "per-sample gradients, peak memory",
                          "agreement": "float32 per-sample gradients vs float64",
                          "dp_overhead": "DP-SGD step vs non-private step"}


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
    name = table_name(path)
    if len(models) == 1:
        written = _figure_set(path, {**data, "agreement": _agreement_of(data.get("agreement"), models[0], False)},
                              out_dir)
        return written + write_tables(timings, meta, out_dir, name, markdown=False)
    written = []
    for model in models:
        mine = [r for r in timings if (r.get("model") or DEFAULT_MODEL) == model]
        written += _figure_set(path, {**data, "timings": mine,
                                      "agreement": _agreement_of(data.get("agreement"), model, True)},
                               out_dir / model)
    if any(r["kind"] == "dp" and r["status"] == "ok" for r in timings):
        with style.figure_context() as plt:
            fig = plt.figure(figsize=(style.COLUMN_WIDTH_IN * 2, 3.2), layout="constrained")  # two columns
            legend = fig_suite(fig, timings)
            for ax in fig.axes:
                if ax.get_visible():
                    style.plain_log_y(ax)
            style.title(fig, "", "ms per training step per workload: SGD, best private step, best peer")
            style.finish(fig, meta, [timings[0]["dtype"]], legend, ncol=5)
            written += style.save(fig, out_dir, "suite_steps")
    return written + write_tables(timings, meta, out_dir, name)


def table_name(path: Path) -> str:
    """The tables' label suffix: the results file's last two directories (``paper-cpu``, ``cpu-devices-n1``)."""
    parts = [p for p in path.resolve().parent.parts[-2:] if p not in ("/", "")]
    return "-".join(parts).replace("_", "-").lower()


def _jobs(data: dict) -> dict[str, tuple]:
    """name -> (draw(axes) -> extra legend handles, the records whose batch sizes label the x axis (None: no
    batch axis), panels, the methods the legend lists)."""
    timings = data["timings"]
    grads = [r for r in timings if r["kind"] != "dp"]
    dp = [r for r in timings if r["kind"] == "dp"]
    ok, dp_ok = [r for r in grads if r["status"] == "ok"], [r for r in dp if r["status"] == "ok"]
    marks = style.marker_map({r["method"] for r in timings})
    grad_marks = {m: mk for m, mk in marks.items() if m in {r["method"] for r in ok}}
    dp_marks = {m: marks[m] for m in sorted({r["method"] for r in dp_ok}, key=lambda m: (m != "sgd", m))}
    jobs = {}
    if ok:
        jobs["time_per_batch"] = (lambda axes: plots.fig_time_panels(axes, grads, data.get("floor"), grad_marks),
                                  ok, len({r["framework"] for r in ok}), grad_marks)
        per_marks = {m: mk for m, mk in grad_marks.items() if m != "batched"}
        jobs["overhead"] = (lambda axes: plots.fig_overhead(axes[0], grads, per_marks), ok, 1, per_marks)
    if any(r.get("peak_mem_bytes") is not None for r in ok):
        jobs["peak_memory"] = (lambda axes: plots.fig_memory(axes[0], grads, grad_marks), ok, 1, grad_marks)
    if data.get("agreement"):
        jobs["agreement"] = (lambda axes: plots.fig_agreement(axes[0], data["agreement"]), None, 1, {})
    if "sgd" in {r["method"] for r in dp_ok} and len({r["method"] for r in dp_ok}) > 1:
        jobs["dp_overhead"] = (lambda axes: plots.fig_dp(axes, dp, dp_marks), dp_ok, 2, dp_marks)
    return jobs


def _figure_set(path: Path, data: dict, out_dir: Path) -> list[Path]:
    """Figures 1-5 of one workload's records into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    timings, meta = data["timings"], data.get("meta", {})
    dtype = timings[0]["dtype"] if timings else "float32"
    model = (timings[0].get("model") if timings else None) or DEFAULT_MODEL
    jobs = _jobs(data)
    written = []
    with style.figure_context() as plt:
        for name, (draw, batch_records, panels, marks) in jobs.items():
            sizes = sorted({r["batch_size"] for r in batch_records or ()})
            single = len(sizes) == 1
            fig, axes = plt.subplots(panels, 1, sharex=not single, sharey=name == "time_per_batch", squeeze=False,
                                     figsize=(style.COLUMN_WIDTH_IN, 1.9 + 1.5 * (panels - 1)),
                                     layout="constrained")
            axes = list(axes[:, 0])
            extra = draw(axes) or []
            for ax in axes if batch_records else ():
                if single:
                    ax.set_xlabel(f"method (B = {sizes[0]})")
                else:
                    plots.log2_batch_axis(ax, batch_records)
                    ax.label_outer()  # stacked panels: batch sizes and their label under the bottom one only
                style.plain_log_y(ax)
            style.title(fig, model, TITLES[name])
            if name == "agreement":
                legend = axes[0].get_legend_handles_labels()[0]
            else:
                legend = style.handles({r["framework"] for r in timings}, {} if single else marks, extra)
            style.finish(fig, meta, [dtype], legend)
            written += style.save(fig, out_dir, name)
    skipped = set(TITLES) - set(jobs)
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
