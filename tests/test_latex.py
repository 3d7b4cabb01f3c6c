"""The LaTeX a paper inputs: the summary tables (``compare.benchmark.latex_tables``) and ``main.tex``
(``compare.latex``). A build with pdflatex runs where it is installed; the checks of the text run everywhere."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from compare.benchmark.latex_tables import per_sample_table, sig3, steps_table
from compare.latex import check, document, write_document

META = {"versions": {"torch": "2.15.0", "jax": "0.12.0"}, "device": "Test CPU", "git_commit": "abc", "command": "x"}


def _rec(model: str, fw: str, kind: str, method: str, b: int, ms: float | None, status: str = "ok",
         **extra) -> dict:
    return {"model": model, "framework": fw, "kind": kind, "method": method, "batch_size": b, "dtype": "float32",
            "device": "cpu", "median_ms": ms, "status": status, "reason": "" if status == "ok" else status, **extra}


def _timings() -> list[dict]:
    out = []
    for b in (16, 32):
        out += [_rec("logreg", "torch", "dp", "sgd", b, 10.0), _rec("logreg", "jax", "dp", "sgd", b, 5.0),
                _rec("logreg", "torch", "dp", "dp_sgd", b, 21.0,
                     ratios={"sgd": {"median": 2.1, "ci95": [2.04, 2.166], "rounds": 9}}),
                _rec("logreg", "jax", "dp", "dp_bk", b, None, status="timeout"),
                _rec("logreg", "torch", "dp", "opacus_sgd", b, 30.0),
                _rec("logreg", "torch", "per_sample", "vmap", b, 4.0, ratio_to_floor=1.234),
                _rec("logreg", "jax", "per_sample", "vmap_patches", b, None, status="not_applicable")]
    return out


def test_three_significant_digits_without_exponents():
    assert [sig3(v) for v in (0.012345, 0.4, 1.2345, 12.345, 99.96, 123.4, 1234.5, 98765)] == \
        ["0.0123", "0.400", "1.23", "12.3", "100", "123", "1230", "98800"]


def test_steps_table_names_dp_sgd_uses_times_and_footnotes_every_empty_cell():
    tex = steps_table(_timings(), META, "tab:steps:t")
    assert r"\caption{" in tex and r"\label{tab:steps:t}" in tex and r"$\times$ SGD" in tex
    assert "(x)" not in tex
    row = next(line for line in tex.splitlines() if line.startswith("logreg & 16"))
    # torch: sgd, the private step named in full, its paired ratio with the interval, the peer over sgd
    assert r"10.0 & \texttt{dp\_sgd} & 2.10 {\scriptsize[2.04, 2.17]} & 3.00" in row
    # jax: its only private step timed out, it has no peer record: footnoted, never a bare dash
    assert r"--\textsuperscript{a}" in row and r"--\textsuperscript{b}" in row
    assert r"\textsuperscript{a}\,timed out" in tex and r"\textsuperscript{b}\,not measured in this run" in tex
    assert " - " not in row and "& - &" not in row


def test_per_sample_table_has_method_time_and_floor_columns():
    tex = per_sample_table(_timings(), META, "tab:ps:t")
    assert r"$\times$ floor" in tex and r"\label{tab:ps:t}" in tex
    row = next(line for line in tex.splitlines() if line.startswith("logreg & 16"))
    assert r"\texttt{vmap} & 4.00 & 1.23" in row
    assert r"\textsuperscript{a}\,not applicable to this workload" in tex


def _tree(tmp_path: Path) -> Path:
    """A results tree with one run's tables and figures, as compare.figures writes them."""
    from compare.benchmark.figures import make_figures

    timings = [{**r, "iqr_ms": 0.0, "min_ms": r["median_ms"], "repeats": 1, "compile_ms": None,
                "first_call_ms": None, "peak_mem_bytes": None, "loss": None, "chunk_size": None}
               for r in _timings()]
    run = tmp_path / "run-a"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({"meta": META, "agreement": None, "floor": None,
                                                  "timings": timings}))
    make_figures(run)
    return tmp_path


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return _tree(tmp_path_factory.mktemp("latex"))


def test_main_tex_inputs_every_table_and_includes_every_figure(tree):
    path = write_document(tree)[0]
    text = path.read_text()
    assert r"\input{run-a/figures/suite_table.tex}" in text and r"\input{run-a/figures/per_sample_table.tex}" in text
    pdfs = sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*.pdf"))
    assert pdfs and all(rf"{{{p}}}" in text for p in pdfs)
    assert check(path) == []


def test_check_finds_what_would_break_the_build(tree, tmp_path):
    good = document(tree)
    cases = {"missing input": good.replace("suite_table.tex}", "nope.tex}"),
             "unbalanced brace": good.replace(r"\maketitle", r"\maketitle{"),
             "unclosed environment": good.replace(r"\end{document}", ""),
             "figure missing": good.replace("overhead.pdf}", "gone.pdf}")}
    for name, text in cases.items():
        doc = tree / "broken.tex"
        doc.write_text(text)
        assert check(doc), name
    table = tree / "run-a" / "figures" / "suite_table.tex"
    saved = table.read_text()
    try:
        table.write_text(saved.replace(r"\caption{", r"\iffalse{").replace(r"\label{", r"\relax{"))
        doc = tree / "broken.tex"
        doc.write_text(good)
        assert any("caption" in p for p in check(doc))
    finally:
        table.write_text(saved)
        (tree / "broken.tex").unlink()


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
def test_main_tex_builds_with_pdflatex(tree):
    write_document(tree)
    run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "main.tex"], cwd=tree,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:]
    assert (tree / "main.pdf").stat().st_size > 1000
