"""docs/results/provenance.md: for every committed results file, the command, commit, date, CPU and versions it
records, or "not recorded"."""
from __future__ import annotations

from pathlib import Path

from compare.report import facts
from compare.report.markdown import Page, table
from compare.report.sources import Paper

COLUMNS = ("command", "commit", "date", "cpu", "torch", "jax", "lock_matches")


def build(paper: Paper, out: Path) -> Page:
    page = Page(out / "results" / "provenance.md")
    prov = paper.provenance()
    commits = facts.commits(paper)
    page.add("# Provenance of the committed results",
             f"{len(prov)} results files under `{paper.root.name}/`; {len(commits)} distinct commits or none "
             "recorded: " + "; ".join(f"`{c}` ({len(files)})" for c, files in sorted(commits.items())) + ". "
             "\"lock\": whether the installed versions matched `requirements/lock.txt` when the file was written.",
             table(["file", "command", "commit", "date", "CPU", "torch", "jax", "lock"],
                   [[f"`{p.file}`", *(p.cell(c) for c in COLUMNS)] for p in prov]))
    return page
