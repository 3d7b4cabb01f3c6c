"""``ROOT/main.tex``: a small document that inputs every table and includes every figure under ``ROOT``.

Written by ``python -m compare.figures --latex-doc paper/`` (after redrawing every figure from its data), so it
lists exactly what the committed results hold. One section per results directory: its tables
(``compare.benchmark.latex_tables``: complete floats with caption and label) through ``\\input``, then its
figures (the PDF of each PDF/PNG pair ``compare.style`` saves) as floats of one column, or of the page for the
two-column ``suite_steps``. ``check`` reads a written document back and names what would break a build; the
tests run it, and build the document with ``pdflatex`` where it is installed.
"""
from __future__ import annotations

import re
from pathlib import Path

from compare.benchmark.figures import TITLES

TABLE_FILES: tuple[str, ...] = ("suite_table.tex", "per_sample_table.tex")
WIDE_FIGURES: tuple[str, ...] = ("suite_steps",)  # drawn two columns wide
# a figure's file name -> what it shows (the benchmark's own from compare.benchmark.figures.TITLES)
DESCRIPTIONS: dict[str, str] = {"suite_steps": "ms per training step per workload: SGD, best private step, best peer",
                                "train_loss": "DP-SGD training loss of both frameworks",
                                "seq_length_panel": "training steps against the sequence length",
                                "accuracy": "float32 against bfloat16 compute: test accuracy and loss over seeds"}
PREAMBLE = r"""\documentclass[twocolumn]{article}
\usepackage[T1]{fontenc}
\usepackage[margin=0.75in]{geometry}
\usepackage{booktabs}
\usepackage{graphicx}
\usepackage{amsmath}
\setcounter{topnumber}{4}\setcounter{totalnumber}{6}\renewcommand{\topfraction}{0.9}
\renewcommand{\textfraction}{0.05}\renewcommand{\floatpagefraction}{0.8}
\renewcommand{\dbltopfraction}{0.9}\renewcommand{\dblfloatpagefraction}{0.8}
"""


def _escape(text: str) -> str:
    return re.sub(r"([_&%#$])", r"\\\1", text)


def _breakable(path: str) -> str:
    """A path for ``\\texttt``: escaped, with a line break allowed after each /."""
    return _escape(path).replace("/", r"/\allowbreak{}")


def _label(rel: Path) -> str:
    return "fig:" + re.sub(r"[^A-Za-z0-9]+", "-", rel.with_suffix("").as_posix()).strip("-").lower()


def figures(root: Path) -> list[Path]:
    """Every figure under ``root`` (its PDF, relative to ``root``) that has its PNG beside it: one per figure."""
    return sorted(p.relative_to(root) for p in root.rglob("*.pdf") if p.with_suffix(".png").is_file())


def tables(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for name in TABLE_FILES for p in root.rglob(name))


def _section(rel_dir: str, rel_tables: list[Path], rel_figures: list[Path]) -> list[str]:
    lines = [rf"\section*{{\texttt{{{_escape(rel_dir)}}}}}", ""]
    lines += [rf"\input{{{t.as_posix()}}}" for t in rel_tables]
    for f in rel_figures:
        env = "figure*" if f.stem in WIDE_FIGURES else "figure"
        width = r"\textwidth" if f.stem in WIDE_FIGURES else r"\columnwidth"
        what = _escape(DESCRIPTIONS.get(f.stem) or TITLES.get(f.stem) or f.stem.replace("_", " "))
        lines += [rf"\begin{{{env}}}[t]", r"\centering", rf"\includegraphics[width={width}]{{{f.as_posix()}}}",
                  rf"\caption{{{what} (\texttt{{{_breakable(f.with_suffix('').as_posix())}}})}}", rf"\label{{{_label(f)}}}",
                  rf"\end{{{env}}}"]
    return lines + [r"\clearpage", ""]  # each run's floats placed before the next run's section


def document(root: Path) -> str:
    """The text of ``root/main.tex``: paths relative to ``root`` (build it there)."""
    tabs, figs = tables(root), figures(root)
    dirs = sorted({t.parts[0] for t in tabs} | {f.parts[0] for f in figs})
    lines = [PREAMBLE, r"\begin{document}", r"\title{Per-sample gradients and DP-SGD in PyTorch and JAX: "
             r"tables and figures}", r"\date{}", r"\maketitle", "",
             "% Written by python -m compare.figures --latex-doc; every table and figure below is made from the",
             "% committed results by code. Build: pdflatex main.tex (in this directory).", ""]
    for d in dirs:
        lines += _section(d, [t for t in tabs if t.parts[0] == d], [f for f in figs if f.parts[0] == d])
    return "\n".join(lines + [r"\end{document}", ""])


def write_document(root: Path) -> list[Path]:
    path = root / "main.tex"
    path.write_text(document(root))
    problems = check(path)
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems))
    return [path]


def _strip_comments(text: str) -> str:
    return re.sub(r"(?<!\\)%.*", "", text)


def check(path: Path) -> list[str]:
    """What would break ``pdflatex path``: a missing ``\\input`` or ``\\includegraphics`` target, unbalanced
    braces or environments (in the document and every input), a table without caption or label, a label used
    twice. Empty when none."""
    problems: list[str] = []
    root = path.parent
    text = _strip_comments(path.read_text())
    files = {path: text}
    for target in re.findall(r"\\input\{([^}]*)\}", text):
        p = root / target
        if not p.is_file():
            problems.append(f"\\input target {target} does not exist")
            continue
        files[p] = _strip_comments(p.read_text())
    for target in re.findall(r"\\includegraphics(?:\[[^]]*\])?\{([^}]*)\}", text):
        if not (root / target).is_file():
            problems.append(f"\\includegraphics target {target} does not exist")
    labels: list[str] = []
    for p, body in files.items():
        depth = 0
        for ch in re.sub(r"\\[{}]", "", body):
            depth += {"{": 1, "}": -1}.get(ch, 0)
            if depth < 0:
                break
        if depth:
            problems.append(f"{p.name}: unbalanced braces")
        stack: list[str] = []
        for kind, env in re.findall(r"\\(begin|end)\{([^}]*)\}", body):
            if kind == "begin":
                stack.append(env)
            elif not stack or stack.pop() != env:
                problems.append(f"{p.name}: \\end{{{env}}} does not close the open environment")
                break
        else:
            if stack:
                problems.append(f"{p.name}: environment(s) {stack} never closed")
        for env_body in re.findall(r"\\begin\{table\*?\}(.*?)\\end\{table\*?\}", body, re.S):
            if "\\caption{" not in env_body or "\\label{" not in env_body:
                problems.append(f"{p.name}: a table without \\caption and \\label")
        labels += re.findall(r"\\label\{([^}]*)\}", body)
    twice = sorted({x for x in labels if labels.count(x) > 1})
    if twice:
        problems.append(f"labels used more than once: {twice}")
    return problems
