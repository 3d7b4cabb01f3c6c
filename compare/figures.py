"""``python -m compare.figures``: redraw figures from committed data alone, in ``compare.style``.

  python -m compare.figures DIR [--out OUT]   the benchmark figures of DIR/results.json (compare.benchmark.figures)
  python -m compare.figures --all ROOT        every figure under ROOT from its data: results.json (benchmark runs),
                                              train.json (training loss), panel.json (sequence-length panel),
                                              <dtype>-seed<k>/ training runs (float32 vs bfloat16)
  python -m compare.figures --latex-doc ROOT  ROOT/main.tex: a document that inputs every table and includes every
                                              figure under ROOT (compare.latex), after redrawing them with --all
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from compare.logs import setup_logging

log = logging.getLogger("compare.figures")


def figure_sources(root: Path) -> list[tuple[str, Path]]:
    """(kind, path) of every data file under ``root`` that figures are drawn from, in path order: ``results``
    (a results.json with timings, unless its run asked for no figures), ``train`` (train.json), ``panel`` (panel.json), ``dtypes`` (a directory of
    <dtype>-seed<k>/ training runs)."""
    found: list[tuple[str, Path]] = []
    for path in sorted(root.rglob("results.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        wanted = ((data.get("meta") or {}).get("config") or {}).get("figures", True)  # False: run with --no-figures
        if "timings" in data and wanted:
            found.append(("results", path))
    found += [("train", p) for p in sorted(root.rglob("train.json"))]
    found += [("panel", p) for p in sorted(root.rglob("panel.json"))]
    seeds = {p.parent for p in root.rglob("*-seed*") if p.is_dir()}
    found += [("dtypes", d) for d in sorted(seeds)]
    return sorted(found, key=lambda kv: str(kv[1]))


def redraw(kind: str, path: Path) -> list[Path]:
    """Draw the figures of one source (``figure_sources``) next to its data."""
    if kind == "results":
        from compare.benchmark.figures import make_figures

        return make_figures(path)
    if kind == "train":
        from compare.training.report import plot

        return plot(json.loads(path.read_text()), path.parent)
    if kind == "panel":
        from compare.panels.seq_length import draw

        return draw(json.loads(path.read_text()), path.parent)
    if kind == "dtypes":
        from compare.training.dtypes import draw, load

        return draw(path, load(path))
    raise ValueError(f"unknown figure source kind {kind!r}")


def redraw_all(root: Path) -> list[Path]:
    written = []
    for kind, path in figure_sources(root):
        written += redraw(kind, path)
        log.info("redrew %s (%s)", path, kind)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m compare.figures", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", type=Path, nargs="?", help="results directory (with results.json) or a JSON file")
    p.add_argument("--out", type=Path, help="output directory (default: <dir>/figures)")
    p.add_argument("--all", type=Path, metavar="ROOT", help="redraw every figure under ROOT from its data")
    p.add_argument("--latex-doc", type=Path, metavar="ROOT",
                   help="redraw every figure under ROOT and write ROOT/main.tex, which inputs every table and "
                        "includes every figure")
    a = p.parse_args(argv)
    if sum(x is not None for x in (a.path, a.all, a.latex_doc)) != 1:
        p.error("give one of: a results path, --all ROOT, --latex-doc ROOT")
    setup_logging()
    root = a.all or a.latex_doc
    if root is not None and not root.is_dir():
        log.error("%s: not a directory", root)
        return 2
    if root is None:
        from compare.benchmark.figures import main as results_main

        return results_main([str(a.path), *(["--out", str(a.out)] if a.out else [])])
    try:
        written = redraw_all(root)
        if a.latex_doc:
            from compare.latex import write_document

            written += write_document(root)
    except (OSError, ValueError, KeyError) as err:
        log.error("%s", err)
        return 2
    for w in written:
        log.info("wrote %s", w)
    return 0


if __name__ == "__main__":
    sys.exit(main())
