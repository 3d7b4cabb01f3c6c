"""The summary tables as LaTeX a paper can ``\\input``: each a complete ``table*`` float with caption and label.

Two tables per results file (``suite_rows`` of ``compare.benchmark.suite`` picks their cells):
  steps (``suite_table.tex``):           per workload and B, each framework's non-private step (SGD, ms), its
                                         fastest private step of ours (named in full: ``dp_sgd`` is the
                                         materialising DP-SGD step), that step over SGD, and the peer's best over SGD;
  per-sample (``per_sample_table.tex``): per workload and B, each framework's fastest per-sample method, its time
                                         and its ratio to the floor (reference + writing the output once).
Numbers carry 3 significant digits; a ratio timed as a pair carries its bootstrap 95% interval in brackets. A cell
without a number names why in a footnote (timed out, out of memory, not applicable to the workload, not run),
never a bare dash. Needs ``booktabs`` (``compare.latex`` writes a document that loads it).
"""
from __future__ import annotations

import math
import re
from collections import defaultdict

from compare.benchmark.suite import OWN_PRIVATE, suite_rows
from contract.peers import library
from contract.peers import names as peer_names

FRAMEWORKS: dict[str, str] = {"torch": "PyTorch", "jax": "JAX"}
# a record's status -> the footnote of a cell it leaves empty; "missing": no record at all
NOTE_TEXT: dict[str, str] = {"timeout": "timed out", "oom": "ran out of memory", "error": "failed (see the record)",
                             "not_applicable": "not applicable to this workload",
                             "skipped": "skipped (its record gives the reason, e.g. a smaller B timed out)",
                             "missing": "not measured in this run"}
_PRIORITY = ("timeout", "oom", "error", "not_applicable", "skipped")


def sig3(value: float | None) -> str:
    """3 significant digits without an exponent: 0.0123, 1.23, 12.3, 123, 1230."""
    if value is None or not math.isfinite(value):
        raise ValueError(f"sig3 of {value!r}")
    if value == 0:
        return "0"
    digits = 2 - math.floor(math.log10(abs(value)))
    if abs(round(value, digits)) >= 10 ** (3 - digits):  # 99.96 rounds up to 100.0: one digit fewer
        digits -= 1
    return f"{round(value, digits):.{max(digits, 0)}f}"


def tex(text: str) -> str:
    """``text`` with LaTeX's special characters escaped."""
    return re.sub(r"([_&%#$])", r"\\\1", text)


def ratio(value: float | None, ci95: list[float] | None = None) -> str:
    """``1.22`` or ``1.22 {\\scriptsize[1.18, 1.26]}`` (the column heading carries the ×)."""
    text = sig3(value)
    if ci95:
        text += rf" {{\scriptsize[{sig3(ci95[0])}, {sig3(ci95[1])}]}}"
    return text


class Notes:
    """Footnote marks for empty cells: one letter per reason, in order of first use."""

    def __init__(self) -> None:
        self.used: dict[str, str] = {}

    def mark(self, status: str) -> str:
        letter = self.used.setdefault(status, "abcdefg"[len(self.used)])
        return rf"--\textsuperscript{{{letter}}}"

    def lines(self) -> list[str]:
        return [rf"\textsuperscript{{{letter}}}\,{NOTE_TEXT[status]}" for status, letter in self.used.items()]


def _why(records: list[dict], methods) -> str:
    """The reason the records of ``methods`` at a point give no number: the most telling non-ok status."""
    statuses = {r["status"] for r in records if r["method"] in methods and r["status"] != "ok"}
    return next((s for s in _PRIORITY if s in statuses), "missing")


def _table(columns: str, head: list[str], body: list[str], caption: str, label: str, notes: Notes,
           meta: dict) -> str:
    v = meta.get("versions") or {}
    lines = [f"% Written by python -m compare.figures from {meta.get('command', 'compare.run')}",
             f"% {meta.get('device', '?')}; torch {v.get('torch', '?')}, jax {v.get('jax', '?')}, "
             f"flax {v.get('flax', '?')}; commit {meta.get('git_commit', '?')}; {meta.get('date', '')}",
             r"\begin{table*}[t]", r"\centering", r"\footnotesize", r"\setlength{\tabcolsep}{4pt}",
             rf"\caption{{{caption}}}", rf"\label{{{label}}}",
             rf"\begin{{tabular}}{{{columns}}}", r"\toprule", *head, r"\midrule", *body, r"\bottomrule",
             r"\end{tabular}"]
    if notes.used:
        lines += [r"\par\smallskip", r"{\footnotesize " + "; ".join(notes.lines()) + ".}"]
    return "\n".join(lines + [r"\end{table*}", ""])


def _by_point(timings: list[dict]) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = defaultdict(list)
    for r in timings:
        out[(r.get("model") or "seed_cnn", r["batch_size"], r["framework"])].append(r)
    return out


def _framework_head(cols: list[str], width: int) -> list[str]:
    spans = " & ".join(rf"\multicolumn{{{width}}}{{c}}{{{FRAMEWORKS[fw]}}}" for fw in FRAMEWORKS)
    rules = "".join(rf"\cmidrule(lr){{{3 + i * width}-{2 + (i + 1) * width}}}" for i in range(len(FRAMEWORKS)))
    return [rf" & & {spans} \\", rules, " & ".join(["workload", "$B$", *cols, *cols]) + r" \\"]


def _rows(rows: list[dict], cells) -> list[str]:
    body, models = [], list(dict.fromkeys(r["model"] for r in rows))
    for i, model in enumerate(models):
        for j, row in enumerate(r for r in rows if r["model"] == model):
            body.append(" & ".join([tex(model) if j == 0 else "", str(row["batch_size"]),
                                    *(c for fw in FRAMEWORKS for c in cells(row, fw))]) + r" \\")
        if i < len(models) - 1:
            body.append(r"\midrule")
    return body


def steps_table(timings: list[dict], meta: dict, label: str) -> str:
    """The training-step table (see the module docstring)."""
    rows, points, notes = suite_rows(timings), _by_point(timings), Notes()

    def cells(row: dict, fw: str) -> list[str]:
        e, recs = row[fw], points.get((row["model"], row["batch_size"], fw), [])
        priv, peer = e.get("private"), e.get("peer_best")
        out = [sig3(e["sgd_ms"]) if e.get("sgd_ms") is not None else notes.mark(_why(recs, {"sgd"}))]
        if priv:
            out += [rf"\texttt{{{tex(priv['method'])}}}", ratio(priv["x_sgd"], priv.get("x_sgd_ci95"))
                    if priv.get("x_sgd") is not None else notes.mark("missing")]
        else:
            out += [notes.mark(_why(recs, OWN_PRIVATE)), notes.mark(_why(recs, OWN_PRIVATE))]
        peers = set(peer_names(fw, "dp"))
        out.append(ratio(peer["x_sgd"], peer.get("x_sgd_ci95")) if peer and peer.get("x_sgd") is not None
                   else notes.mark(_why(recs, peers)))
        return out

    cols = ["SGD (ms)", "private step", r"$\times$ SGD", r"peer $\times$ SGD"]
    body = _rows(rows, cells)
    peers = "; ".join(f"{FRAMEWORKS[fw]}: {tex(library(fw))}" for fw in FRAMEWORKS)
    caption = (r"Training step per workload and batch size $B$: the non-private SGD step (median ms), the fastest "
               r"private step of ours (\texttt{dp\_sgd} materialises per-sample gradients, \texttt{dp\_ghost} and "
               r"\texttt{dp\_bk} do not) and its time over SGD's, and the fastest peer step over SGD's "
               f"({peers}). Brackets: bootstrap 95\\% interval of the paired ratio.")
    return _table("ll" + "rlrr" * len(FRAMEWORKS), _framework_head(cols, 4), body, caption, label, notes, meta)


def per_sample_table(timings: list[dict], meta: dict, label: str) -> str:
    """The per-sample gradient table (see the module docstring)."""
    rows, points, notes = suite_rows(timings), _by_point(timings), Notes()

    def cells(row: dict, fw: str) -> list[str]:
        ps = row[fw].get("per_sample")
        if not ps:
            recs = points.get((row["model"], row["batch_size"], fw), [])
            methods = {r["method"] for r in recs if r["kind"] == "per_sample"}
            return [notes.mark(_why(recs, methods))] * 3
        floor = (ratio(ps["ratio_to_floor"], ps.get("ratio_to_floor_ci95")) if ps.get("ratio_to_floor") is not None
                 else notes.mark("missing"))
        return [rf"\texttt{{{tex(ps['method'])}}}", sig3(ps["ms"]), floor]

    cols = ["per-sample method", "ms", r"$\times$ floor"]
    caption = (r"Per-sample gradients per workload and batch size $B$: the fastest per-sample method of each "
               r"framework, its median time per batch (ms) and its time over the floor (the batched gradient plus "
               r"writing the $B \times P$ output once at the measured bandwidth). Brackets: bootstrap 95\% "
               r"interval of the paired ratio.")
    return _table("ll" + "lrr" * len(FRAMEWORKS), _framework_head(cols, 3), _rows(rows, cells), caption, label,
                  notes, meta)


def has_steps(timings: list[dict]) -> bool:
    return any(r["kind"] == "dp" and r["method"] == "sgd" and r["status"] == "ok" for r in timings)


def has_per_sample(timings: list[dict]) -> bool:
    return any(r["kind"] == "per_sample" and r["status"] == "ok" for r in timings)
