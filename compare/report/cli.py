"""``python -m compare.report RESULTS_DIR --out DOCS_DIR [--readme README.md] [--check]``.

Writes DOCS_DIR/results.md and DOCS_DIR/results/*.md from the committed results and the README's summary table
(between its summary markers). ``--check`` writes nothing: it prints one line per difference between the
committed files and what the data gives and exits 1 when there is any (0 when they are current).
"""
from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

from compare.report import page_costs, page_index, page_more, page_provenance, page_seed, page_study
from compare.report.markdown import Page
from compare.report.sources import Paper
from compare.report.summary import splice, summary_table


def pages(paper: Paper, out: Path) -> list[Page]:
    """Every page of the document, the index last (it lists the others)."""
    parts = [page_seed.build(paper, out), page_study.build(paper, out), page_costs.build(paper, out),
             page_more.bfloat16(paper, out), page_more.distributed(paper, out), page_provenance.build(paper, out)]
    parts = [p for p in parts if p is not None]
    return [*parts, page_index.build(paper, out, parts)]


def outputs(paper: Paper, out: Path, readme: Path | None) -> tuple[dict[Path, str], set[Path]]:
    """{file: its generated text} and the committed figures the document and the README link."""
    docs = pages(paper, out)
    files = {p.path: p.text() for p in docs}
    used = set().union(*(p.figures for p in docs))
    if readme is not None:
        page = Page(readme)
        files[readme] = splice(readme.read_text(), summary_table(paper, page), str(readme))
        used |= {Path(line.split("](", 1)[1].split(")", 1)[0]) for line in readme.read_text().splitlines()
                 if line.startswith("![") and "](" in line}
    return files, used


def differences(files: dict[Path, str], out: Path) -> list[str]:
    """One line per difference between the files on disk and ``files`` (and per stale generated page)."""
    lines = []
    for path, text in files.items():
        if not path.is_file():
            lines.append(f"{path}: missing (the data gives {len(text.splitlines())} lines)")
            continue
        old = path.read_text().splitlines()
        for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=old, b=text.splitlines(), autojunk=False).get_opcodes():
            if op == "equal":
                continue
            was = old[i1] if i1 < i2 else ""
            now = text.splitlines()[j1] if j1 < j2 else ""
            lines.append(f"{path}:{i1 + 1}: {op}: committed {was[:100]!r} / from the data {now[:100]!r}")
    stale = sorted(set((out / "results").glob("*.md")) - set(files))
    lines += [f"{p}: not generated from the data any more (delete it)" for p in stale]
    return lines


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m compare.report", description=__doc__.splitlines()[0])
    p.add_argument("results", type=Path, help="the committed results directory (paper/)")
    p.add_argument("--out", type=Path, default=Path("docs"), help="where results.md and results/ go (docs/)")
    p.add_argument("--readme", type=Path, default=Path("README.md"),
                   help="README whose summary table (between its summary markers) is generated too")
    p.add_argument("--no-readme", action="store_true", help="leave the README alone")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 listing every difference")
    p.add_argument("--unused-figures", action="store_true", help="list committed PNGs that nothing links")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    readme = None if a.no_readme else a.readme
    try:
        if readme is not None and not readme.is_file():
            raise FileNotFoundError(f"{readme}: no such README (pass --readme PATH or --no-readme)")
        files, used = outputs(Paper(a.results), a.out, readme)
    except (FileNotFoundError, ValueError) as e:
        print(f"compare.report: {e}", file=sys.stderr)
        return 2
    if a.unused_figures:
        for png in Paper(a.results).figures:
            if png not in {Path(p) for p in used} and png.resolve() not in {Path(p).resolve() for p in used}:
                print(png)
        return 0
    if a.check:
        diff = differences(files, a.out)
        for line in diff:
            print(line)
        return 1 if diff else 0
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    print(f"wrote {len(files)} files: " + ", ".join(str(p) for p in files))
    return 0
