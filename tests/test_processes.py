"""``compare.train --processes 2`` (torchrun --nnodes 2 / jax.distributed, on localhost) on logreg: float64 losses
equal one process to 1e-12 relative and epsilon is the one-process value; a process that dies or hangs mid-run
ends the run with one error naming it, within the step timeout; processes with different weights are refused
before the first step. Each case starts 2 processes (~10-30 s on 2 shared cores: interpreter and framework
start-up dominate).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from compare.training import processes as procs

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--model", "logreg", "--steps", "3", "--batch-size", "5", "--dtype", "float64", "--clipping", "bk"]


@pytest.fixture
def child_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The launched processes import this checkout and tests/fault_train.py."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), str(ROOT / "tests")]))


def _report(out: Path) -> dict:
    return json.loads((out / "logreg" / "train.json").read_text())


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_two_processes_equal_one(framework: str, tmp_path: Path, child_path: None) -> None:
    from compare.training.cli import main

    one, two = tmp_path / "one", tmp_path / "two"
    assert main([*ARGS, "--frameworks", framework, "--out", str(one)]) == 0
    assert main([*ARGS, "--frameworks", framework, "--processes", "2", "--out", str(two)]) == 0
    a, b = _report(one), _report(two)
    la, lb = a["frameworks"][framework]["loss"], b["frameworks"][framework]["loss"]
    assert len(la) == len(lb) == 3
    assert max(abs(x - y) / abs(x) for x, y in zip(la, lb)) <= 1e-12
    assert b["epsilon"] == a["epsilon"]
    assert b["frameworks"][framework]["processes"] == 2
    comm = b["frameworks"][framework]["communication"]
    assert comm["allreduce_bytes"] == (210 + 2) * 8 and comm["sent_per_process_bytes"] == comm["allreduce_bytes"]


def _launch(framework: str, fault: str, out: Path, timeout_s: float = 10.0) -> str:
    argv = ["1", "1", *ARGS, "--frameworks", framework, "--processes", "2", "--out", str(out)]
    with pytest.raises(procs.ProcessError) as err:
        procs.run_processes(framework, "logreg", 2, [fault, *argv], out, None, timeout_s=timeout_s,
                            module="fault_train")
    return str(err.value)


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_dead_process_is_named(framework: str, tmp_path: Path, child_path: None) -> None:
    message = _launch(framework, "die", tmp_path)
    assert message.startswith("process 1 exited with code") and "after step 0" in message, message
    assert "code 3" in message or "exitcode : 3" in message, message  # torchrun reports its worker's code


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_hung_process_is_named_within_the_timeout(framework: str, tmp_path: Path, child_path: None) -> None:
    t0 = time.monotonic()
    message = _launch(framework, "hang", tmp_path, timeout_s=5.0)
    assert message.startswith("process 1 hung after step 0") or message.startswith("process 1 was killed"), message
    assert time.monotonic() - t0 < 120  # a bound, not a timing claim: without the watchdog this would not return


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_processes_with_other_weights_are_refused(framework: str, tmp_path: Path, child_path: None) -> None:
    message = _launch(framework, "weights", tmp_path)
    assert "disagree before the first step" in message and "weights" in message, message
    assert "before its first step" in message
