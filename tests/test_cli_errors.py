"""Every command line: a bad argument is one line naming the problem (exit 2, no traceback), and nothing is
written: not the output directory, not a weights file, not a figure. One table, one row per case."""
from __future__ import annotations

import importlib
import logging
from pathlib import Path

import pytest

MAINS = {
    "compare.run": "compare.benchmark.cli",
    "compare.train": "compare.training.cli",
    "compare.figures": "compare.figures",
    "compare.profile": "compare.benchmark.profile",
    "compare.env": "compare.env",
    "compare.paper": "compare.paper",
}


def _fixtures(root: Path) -> None:
    """The files the table's rows point at (in the test's working directory)."""
    (root / "adir").mkdir()
    (root / "afile").write_text("not a directory")
    (root / "garbage.safetensors").write_bytes(b"\x00\x01 not a safetensors header")
    (root / "cut.json").write_text('{"meta": {"date": "2026-12-01"}, "timings": [{"framework": "jax", "med')
    (root / "binary.json").write_bytes(b"\xff\xfe\x00\x81")
    (root / "list.json").write_text("[1, 2]")
    (root / "old").mkdir()  # a results directory whose results.json was cut off
    (root / "old" / "results.json").write_text('{"timings": [')


# (command, arguments, a fragment of the one error line)
CASES = [
    ("compare.run", ["--out", "/proc/results"], "cannot create a directory in '/proc'"),
    ("compare.run", ["--out", ""], "the output directory is empty"),
    ("compare.run", ["--out", "afile"], "'afile' exists and is not a directory"),
    ("compare.run", ["--out", "afile/sub"], "'afile' is a file, not a directory"),
    ("compare.run", ["--weights", "adir"], "'adir' is a directory, not a file"),
    ("compare.run", ["--weights", "missing.safetensors"], "'missing.safetensors': no such file"),
    ("compare.run", ["--weights", "garbage.safetensors", "--out", "out"],
     "weights file garbage.safetensors is not a readable safetensors file"),
    ("compare.run", ["--batch-sizes", "32,,64"], "empty entry in '32,,64'"),
    ("compare.run", ["--batch-sizes", "32,x"], "'x' in '32,x' is not a valid int"),
    ("compare.run", ["--frameworks", "torch,"], "empty entry in 'torch,'"),
    ("compare.run", ["--frameworks", "tf"], "unknown tf; expected some of torch, jax"),
    ("compare.run", ["--methods", "vmap,,loop"], "empty entry"),
    ("compare.run", ["--methods", "fastest", "--out", "out"], "unknown method(s) ['fastest']"),
    ("compare.run", ["--agreement-file", "adir"], "'adir' is a directory, not a file"),
    ("compare.run", ["--agreement-file", "cut.json", "--out", "out"], "--agreement-file cut.json: not a JSON file"),
    ("compare.run", ["--agreement-file", "list.json", "--out", "out"], "list.json: not an agreement report"),
    ("compare.train", ["--out", "/proc/results"], "cannot create a directory in '/proc'"),
    ("compare.train", ["--out", ""], "the output directory is empty"),
    ("compare.train", ["--weights", "adir"], "'adir' is a directory, not a file"),
    ("compare.train", ["--weights", "garbage.safetensors", "--out", "out"],
     "weights file garbage.safetensors is not a readable safetensors file"),
    ("compare.train", ["--frameworks", "torch,"], "empty entry in 'torch,'"),
    ("compare.train", ["--frameworks", "torch", "tf"], "unknown tf"),
    ("compare.run", ["--model", "logreg,,ffnn"], "empty entry in 'logreg,,ffnn'"),
    ("compare.train", ["--model", "logreg,,ffnn"], "empty entry in 'logreg,,ffnn'"),
    ("compare.profile", ["--framework", "jax", "--model", "logreg,"], "empty entry in 'logreg,'"),
    ("compare.figures", ["cut.json"], "cut.json: not valid JSON"),
    ("compare.figures", ["old"], "old/results.json: not valid JSON"),
    ("compare.figures", ["binary.json"], "binary.json: not a JSON text file"),
    ("compare.figures", ["list.json"], "list.json: expected a JSON object with 'timings'"),
    ("compare.figures", ["adir"], "adir/results.json: no such file"),
    ("compare.figures", ["missing.json"], "missing.json: no such file"),
    ("compare.figures", ["old", "--out", "/proc/figures"], "cannot create a directory in '/proc'"),
    ("compare.profile", ["--framework", "torch", "--json", "adir"], "'adir' is a directory; name a file"),
    ("compare.profile", ["--framework", "torch", "--json", "afile/p.json"], "'afile' exists and is not a directory"),
    ("compare.profile", ["--framework", "torch", "--batch-size", "0"], "must be positive"),
    ("compare.env", ["--device", "tpu"], "invalid choice: 'tpu'"),
    ("compare.figures", ["--all", "adir", "old"], "give one of"),
    ("compare.figures", ["--latex-doc", "afile"], "afile: not a directory"),
    ("compare.paper", ["--only", "nope"], "unknown output(s) ['nope']"),
    ("compare.paper", ["--only", "versions"], "versions cannot be re-made here"),
]


def _tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize(("command", "args", "message"), CASES, ids=[f"{c}:{' '.join(a)}" for c, a, _ in CASES])
def test_a_bad_argument_is_one_line_and_writes_nothing(command, args, message, tmp_path, monkeypatch, capsys,
                                                       caplog):
    _fixtures(tmp_path)
    monkeypatch.chdir(tmp_path)
    before = _tree(tmp_path)
    main = importlib.import_module(MAINS[command]).main
    caplog.set_level(logging.INFO)
    try:
        code = main(args)
    except SystemExit as exc:  # argparse: usage + one error line
        code = exc.code
    err = capsys.readouterr().err + caplog.text
    assert code == 2, err
    assert "Traceback" not in err
    hits = [line for line in err.splitlines() if message in line]
    assert len(hits) == 1, err  # the problem is named on one line
    assert _tree(tmp_path) == before  # nothing written: no output directory, weights file or figure
