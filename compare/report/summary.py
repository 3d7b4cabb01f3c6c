"""The answers first: one table, per workload and framework, of agreement, the best per-sample method against
its floor, the best private step against the framework's own SGD step and the peer library against it.

Each cell comes from the newest study run (``compare.run --suite``, by recorded date) that has it at
``SUMMARY_BATCH``; the row names the runs it used. A paired run's ratio carries its bootstrap 95% interval and
goal verdict; an unpaired run's is a ratio of medians, marked as such.
"""
from __future__ import annotations

from dataclasses import dataclass

from compare.benchmark.paired import GOALS
from compare.benchmark.suite import suite_rows
from compare.report.markdown import Page, num, sci, table
from compare.report.sources import Paper
from compare.report.tables import FRAMEWORKS, FW_NAME
from contract.peers import names as peer_names

SUMMARY_BATCH = 256  # the largest batch size every study run measures
START, END = "<!-- summary:start -->", "<!-- summary:end -->"


@dataclass(frozen=True)
class Cell:
    entry: dict | None
    run: str | None
    note: str = ""


def study_rows(paper: Paper) -> dict[str, dict[tuple[str, int], dict]]:
    """{run: {(model, batch size): suite row}} of every study run."""
    return {run: {(r["model"], r["batch_size"]): r for r in suite_rows(paper.run(run).timings)}
            for run in paper.study_runs}


def agreement_reports(paper: Paper) -> dict[str, tuple[str, dict]]:
    """{model: (run, report)}: each workload's newest agreement report among the study runs."""
    out: dict[str, tuple[str, dict]] = {}
    for run in paper.study_runs:
        agreement = paper.run(run).agreement or {}
        for model, rep in (agreement.get("by_model") or {}).items():
            out[model] = (run, rep)
    return out


def agreement_source(paper: Paper, run: str) -> str:
    """Where a run's agreement report was made: the ``--agreement-file`` it reused, else the run itself."""
    words = (paper.run(run).meta.get("command") or "").split()
    return words[words.index("--agreement-file") + 1] if "--agreement-file" in words[:-1] else f"{run}/results.json"


def models(paper: Paper) -> list[str]:
    return list(dict.fromkeys(m for rows in study_rows(paper).values() for m, _ in rows))


def newest(rows: dict[str, dict], model: str, fw: str, key: str, batch: int = SUMMARY_BATCH) -> Cell:
    """The newest run's entry ``key`` of framework ``fw`` for ``model`` at ``batch``."""
    for run in reversed(list(rows)):
        entry = (rows[run].get((model, batch)) or {}).get(fw, {}).get(key)
        if entry:
            return Cell(entry, run)
    return Cell(None, None)


def peer_failure(paper: Paper, model: str, fw: str, batch: int = SUMMARY_BATCH) -> Cell:
    """Why the newest run that timed a peer of ``fw`` at ``batch`` has no time for it (timeout, oom...)."""
    for run in reversed(paper.study_runs):
        recs = [r for r in paper.run(run).timings if (r.get("model") or "seed_cnn") == model
                and r["framework"] == fw and r["batch_size"] == batch and r["method"] in peer_names(fw, "dp")]
        if recs:
            return Cell(None, run, ", ".join(f"{r['method']}: {r['status']} ({r['reason']})" for r in recs))
    return Cell(None, None)


def ratio_text(entry: dict, field: str, goal: str) -> str:
    v, ci, verdict = entry.get(field), entry.get(f"{field}_ci95"), entry.get(f"{field}_verdict")
    if v is None:
        return "–"
    if ci:
        return f"{v:.2f} [{ci[0]:.2f}, {ci[1]:.2f}] {verdict or ''}".rstrip()
    bound, direction = GOALS[goal]
    met = v <= bound if direction == "at_most" else v > bound
    return f"{v:.2f}" + ("" if met else " ⚠")


def agreement_cell(rep: dict | None, fw: str) -> str:
    if rep is None:
        return "not checked"
    worst = max((v for k, v in rep["float64_max_rel_err"].items() if k.startswith(fw + "/") and " vs " not in k),
                default=None)
    flips = len((rep.get("flipped_samples") or {}).get(f"{fw}/float32") or [])
    unexplained = [u for u in rep.get("unexplained") or [] if str(u).startswith(fw)]
    verdict = "yes" if rep.get("ok") and not unexplained else "**no**"
    return f"{verdict}: float64 ≤ {sci(worst)}" + (f"; {flips} float32 flips explained" if flips else "")


def summary_table(paper: Paper, page: Page) -> str:
    rows, reports = study_rows(paper), agreement_reports(paper)
    runs_used: list[str] = []

    def ref(*cells: Cell) -> str:
        for c in cells:
            if c.run and c.run not in runs_used:
                runs_used.append(c.run)
        return ", ".join(f"[{runs_used.index(r) + 1}]" for r in dict.fromkeys(c.run for c in cells if c.run))

    out = []
    for model in models(paper):
        rep = reports.get(model, (None, None))[1]
        for fw in FRAMEWORKS:
            ps, priv = newest(rows, model, fw, "per_sample"), newest(rows, model, fw, "private")
            peer = newest(rows, model, fw, "peer_best")
            if peer.entry is None:
                peer = peer_failure(paper, model, fw)
            out.append([
                f"`{model}`", FW_NAME[fw], agreement_cell(rep, fw),
                f"{ratio_text(ps.entry, 'ratio_to_floor', 'per_sample_over_floor')} ({ps.entry['method']})"
                if ps.entry else "–",
                f"{ratio_text(priv.entry, 'x_sgd', 'private_over_sgd')} ({priv.entry['method']})" if priv.entry else "–",
                (f"{ratio_text(peer.entry, 'over_ours', 'peer_over_ours')} ({peer.entry['method']})" if peer.entry
                 else peer.note or "–"),
                ref(ps, priv, peer)])
    goals = {k: num(v[0]) for k, v in GOALS.items()}
    text = table(["workload", "framework", "agree with the float64 reference?",
                  f"best per-sample × floor (B={SUMMARY_BATCH})", f"best private step × own SGD (B={SUMMARY_BATCH})",
                  f"peer step ÷ best private (B={SUMMARY_BATCH})", "runs"], out, "llllll" + "l")
    tol = next((rep["tolerance"] for _, rep in reports.values() if rep.get("tolerance")), {})
    paired = any(paper.run(r).schema_version >= 2 for r in runs_used)
    notes = [f"[{i}] [`{paper.root.name}/{r}`]({page.link(paper.path(r))})" for i, r in enumerate(runs_used, 1)]
    legend = (f"Goals: per-sample ≤ {goals['per_sample_over_floor']}× floor, private step ≤ "
              f"{goals['private_over_sgd']}× SGD, peer ÷ ours > {goals['peer_over_ours']}; ⚠ marks a ratio on the "
              "wrong side of its goal. " +
              ("Intervals: bootstrap 95% of paired rounds, with the verdict (met / missed / undecided). "
               if paired else "") +
              ("Ratios without an interval come from unpaired runs (ratio of medians, no interval, no verdict). "
               if not all(paper.run(r).schema_version >= 2 for r in runs_used) else "") +
              "Agreement: every method of the framework against its float64 loop and the float64 reference "
              f"(tolerance {tol.get('float64', 'not recorded'):g}, relative), float32 disagreements explained by "
              "decision replay. Runs: " + "; ".join(notes) + ".")
    return text + "\n\n" + legend


def splice(readme: str, block: str, where: str = "README.md") -> str:
    """``readme`` with the text between the summary markers replaced by ``block``."""
    if START not in readme or END not in readme:
        raise ValueError(f"{where}: no {START} ... {END} markers for the summary table")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{block}\n{END}{tail}"
