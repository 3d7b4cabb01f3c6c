"""compare.report: the committed results document and README table are what the committed data gives, and a
changed number in the data makes ``--check`` fail, one line per difference."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from compare.benchmark.records import failure_record
from compare.report.cli import main
from compare.report.summary import END, START

ROOT = Path(__file__).resolve().parents[1]


def test_the_committed_documents_are_current(capsys):
    rc = main([str(ROOT / "paper"), "--out", str(ROOT / "docs"), "--readme", str(ROOT / "README.md"), "--check"])
    out = capsys.readouterr().out
    assert rc == 0, f"docs or README differ from paper/ (run python -m compare.report paper/ --out docs/):\n{out}"
    assert out == ""


def _record(framework: str, kind: str, method: str, median_ms: float, **kw) -> dict:
    spec = {"model": "logreg", "framework": framework, "kind": kind, "method": method, "batch_size": 256,
            "dtype": "float32", "device": "cpu", "loss": "nll_log_softmax"}
    return {**failure_record(spec, "ok", ""), "median_ms": median_ms, "iqr_ms": 0.1 * median_ms,
            "min_ms": median_ms, "repeats": 5, **kw}


def _agreement() -> dict:
    return {"ok": True, "by_model": {"logreg": {
        "model": "logreg", "batch_size": 8, "ok": True, "tolerance": {"float64": 1e-10, "float32": 1e-4},
        "float64_max_rel_err": {"torch/float64": 3e-16, "jax/float64": 4e-16, "torch/float64 vs jax/float64": 5e-16},
        "smooth_max_rel_err": {"torch/float32": 1e-7, "jax/float32": 2e-7}, "flipped_samples": {},
        "explanations": {}, "not_applicable": {}, "unexplained": []}}}


def _synthetic(root: Path) -> tuple[Path, Path, Path]:
    """A results directory with one study run of one workload, a README with the summary markers, a docs dir."""
    run = root / "paper" / "suite"
    run.mkdir(parents=True)
    timings = [_record("torch", "dp", "sgd", 4.0), _record("torch", "dp", "dp_bk", 5.0),
               _record("torch", "dp", "opacus_sgd", 10.0), _record("torch", "per_sample", "per_layer", 6.0,
                                                                     ratio_to_floor=1.1),
               _record("jax", "dp", "sgd", 2.0), _record("jax", "dp", "dp_bk", 3.0),
               _record("jax", "dp", "jax_privacy", 9.0), _record("jax", "per_sample", "per_layer", 4.0,
                                                                  ratio_to_floor=1.3)]
    meta = {"date": "2026-01-01T00:00:00+00:00", "command": "python -m compare.run --suite fast-dpsgd --model logreg",
            "git_commit": "0" * 40, "device": "Test CPU", "device_kind": "cpu",
            "versions": {"torch": "2.15.0", "jax": "0.12.0.1"}, "lock": {"matches": True}}
    (run / "results.json").write_text(json.dumps({"meta": meta, "agreement": _agreement(), "floor": None,
                                                  "timings": timings}))
    (run / "unused.png").write_bytes(b"")
    readme = root / "README.md"
    readme.write_text(f"# test\n\n{START}\n{END}\n\nmore\n")
    return root / "paper", root / "docs", readme


def test_the_answers_come_from_the_data_and_a_changed_number_fails_the_check(tmp_path, capsys):
    paper, docs, readme = _synthetic(tmp_path)
    args = [str(paper), "--out", str(docs), "--readme", str(readme)]
    assert main(args) == 0
    text = readme.read_text()
    # torch: dp_bk 5.0 / sgd 4.0, Opacus 10.0 / 5.0, per_layer 1.1 x floor; jax: 3.0 / 2.0, 9.0 / 3.0
    assert "1.25 (dp_bk)" in text and "2.00 (opacus_sgd)" in text and "1.10 (per_layer)" in text
    assert "1.50 ⚠ (dp_bk)" in text and "3.00 (jax_privacy)" in text and "1.30 ⚠ (per_layer)" in text
    assert text.endswith(f"{END}\n\nmore\n")
    assert (docs / "results.md").is_file() and (docs / "results" / "study.md").is_file()
    capsys.readouterr()
    assert main([*args, "--check"]) == 0 and capsys.readouterr().out == ""

    results = paper / "suite" / "results.json"
    data = json.loads(results.read_text())
    data["timings"][4]["median_ms"] = 2.5  # jax sgd: dp_bk over sgd becomes 1.20
    results.write_text(json.dumps(data))
    before = {p: p.read_text() for p in [readme, *docs.rglob("*.md")]}
    assert main([*args, "--check"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines and all(": " in line for line in lines)
    assert any(line.startswith(str(readme)) and "1.20 (dp_bk)" in line for line in lines)
    assert any(line.startswith(str(docs / "results")) for line in lines)
    assert {p: p.read_text() for p in before} == before  # --check writes nothing


def test_unused_figures_are_listed(tmp_path, capsys):
    paper, docs, readme = _synthetic(tmp_path)
    assert main([str(paper), "--out", str(docs), "--readme", str(readme), "--unused-figures"]) == 0
    assert capsys.readouterr().out.split() == [str(paper / "suite" / "unused.png")]


@pytest.mark.parametrize("problem", ["no results dir", "no markers"])
def test_bad_input_is_one_line(tmp_path, capsys, problem):
    paper, docs, readme = _synthetic(tmp_path)
    if problem == "no results dir":
        paper = tmp_path / "missing"
    else:
        readme.write_text("# no markers\n")
    assert main([str(paper), "--out", str(docs), "--readme", str(readme)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and (str(paper) in err if problem == "no results dir" else START in err)
    assert not docs.exists()
