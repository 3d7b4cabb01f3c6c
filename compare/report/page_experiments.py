"""docs/results/experiments.md: the focused experiments (each results directory with its own README) and every
committed figure no other page shows, by directory, so that the document uses every figure it commits."""
from __future__ import annotations

from pathlib import Path

from compare.report.markdown import Page
from compare.report.sources import Paper


def _title(readme: Path) -> str:
    """A README's first heading (its file name when it has none)."""
    for line in readme.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return readme.parent.name


def build(paper: Paper, out: Path, pages: list[Page]) -> Page:
    page = Page(out / "results" / "experiments.md")
    page.add("# Experiment notes and every other figure",
             "Directories under `paper/` that hold one focused experiment carry a README: what was measured, how, "
             "and its command; the numbers are in the JSON files beside it.")
    readmes = sorted(paper.root.glob("*/README.md"))
    if readmes:
        page.add("\n".join(f"- [`{r.parent.name}`]({page.link(r)}): {_title(r)}" for r in readmes))
    shown = {Path(p).resolve() for pg in pages for p in pg.figures}
    rest: dict[str, list[Path]] = {}
    for png in paper.figures:
        if png.resolve() not in shown:
            rest.setdefault(png.relative_to(paper.root).parts[0], []).append(png)
    if rest:
        page.add("## Figures not shown on the other pages", "Drawn by `python -m compare.figures --all paper/` "
                 "from each run's own results; the footer of each names its versions, CPU and commit.")
        for run, pngs in sorted(rest.items()):
            page.add(f"### `{run}`", "\n".join(
                f"- {page.figure_link(p, p.relative_to(paper.root / run).as_posix())}" for p in pngs))
    return page
