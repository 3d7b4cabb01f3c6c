"""``compare.train --resume``: a run stopped at any point (an interrupt, SIGKILL of the process, of one of
``--processes``' processes, a crash while a checkpoint is written) continues from its last checkpoint and ends
with the uninterrupted run's losses and parameters: bitwise in one process (float64), to 1e-12 relative across
processes or devices (their documented agreement with one process). A checkpoint of another configuration,
version set, world size or initial weights is refused in one line before any step. logreg, B = 5, float64.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from compare.training import checkpoint as ckpt
from compare.training import cli, processes as procs
from compare.training.data import batch_indices
from compare.training.streams import Streams
from contract.weights import load_state

ROOT = Path(__file__).resolve().parents[1]
STEPS = 5
ARGS = ["--model", "logreg", "--steps", str(STEPS), "--batch-size", "5", "--dtype", "float64",
        "--noise-multiplier", "1.0"]
TOL = 1e-12  # processes / devices vs one process (tests/test_processes.py, tests/test_distributed_workloads.py)


@pytest.fixture
def child_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Child processes import this checkout and tests/fault_train.py."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), str(ROOT / "tests")]))


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run, both frameworks, one process."""
    out = tmp_path_factory.mktemp("reference")
    assert cli.main([*ARGS, "--out", str(out)]) == 0
    return out / "logreg"


def _final(run: Path, fw: str) -> tuple[list[float], dict[str, np.ndarray]]:
    losses = json.loads((run / "train.json").read_text())["frameworks"][fw]["loss"]
    params, _ = load_state(ckpt.path(run, fw), "logreg")
    return losses, params


def _assert_same(run: Path, reference: Path, frameworks: tuple[str, ...], tol: float = 0.0) -> None:
    for fw in frameworks:
        (la, pa), (lb, pb) = _final(run, fw), _final(reference, fw)
        assert len(la) == STEPS
        np.testing.assert_allclose(la, lb, rtol=tol, atol=0, err_msg=fw)
        for k in pb:
            assert pa[k].dtype == np.float64
            np.testing.assert_allclose(pa[k], pb[k], rtol=tol, atol=0, err_msg=f"{fw} {k}")


def _progress_steps(run: Path) -> list[tuple[str, int]]:
    lines = [json.loads(line) for line in (run / "train_progress.jsonl").read_text().splitlines()]
    return [(d["framework"], d["step"]) for d in lines if "framework" in d]


def _steps_in_order(frameworks: tuple[str, ...]) -> set[tuple[str, int]]:
    return {(fw, i) for fw in frameworks for i in range(STEPS)}


def test_streams_restored_from_json_continue_as_the_uninterrupted_ones() -> None:
    a = Streams(12, 5, 3, 1.0, "logreg")  # 2 batches per epoch: the restore crosses an epoch boundary
    first = [a.next() for _ in range(3)]
    b = Streams(12, 5, 3, 1.0, "logreg")
    b.restore(json.loads(json.dumps(a.state())))
    rest_a, rest_b = [a.next() for _ in range(4)], [b.next() for _ in range(4)]
    for (ia, za), (ib, zb) in zip(rest_a, rest_b):
        np.testing.assert_array_equal(ia, ib)
        for k in za:
            np.testing.assert_array_equal(za[k], zb[k])
    batches = list(batch_indices(12, 5, steps=7, seed=3))  # the same order as the training loop's stream
    noise = list(cli.noise_draws(3, 7, 1.0, "logreg"))
    for i, (idx, z) in enumerate(first + rest_a):
        np.testing.assert_array_equal(idx, batches[i])
        np.testing.assert_array_equal(z["fc.weight"], noise[i]["fc.weight"])


def test_interrupted_run_resumes_to_the_same_parameters(tmp_path: Path, reference: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """torch finishes, jax stops before step 3 with its last checkpoint at step 2 (every 2nd step)."""
    beat, seen = procs.beat, []

    def interrupt(step: int, done: bool) -> None:
        if step == 3 and not done:
            seen.append(step)
            if len(seen) == 2:  # the second framework to reach step 3: jax
                raise KeyboardInterrupt
        beat(step, done)

    monkeypatch.setattr(procs, "beat", interrupt)
    args = [*ARGS, "--checkpoint-every", "2", "--out", str(tmp_path)]
    assert cli.main(args) == 130
    run = tmp_path / "logreg"
    assert [s.step for s in (ckpt.load(run, fw, "logreg") for fw in ("torch", "jax"))] == [STEPS, 2]
    monkeypatch.setattr(procs, "beat", beat)
    assert cli.main([*args, "--resume"]) == 0
    _assert_same(run, reference, ("torch", "jax"))
    steps = _progress_steps(run)
    assert sorted(steps) == sorted(_steps_in_order(("torch", "jax")))  # jax's step 2 once: redone, its line trimmed


def test_sigkilled_process_resumes_to_the_same_parameters(tmp_path: Path, reference: Path, child_path: None) -> None:
    """SIGKILL of the training process itself before torch's step 2: no cleanup runs; jax never started."""
    cmd = [sys.executable, "-m", "fault_train", "kill", "0", "2", *ARGS, "--out", str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == -9, done.stderr[-2000:]
    run = tmp_path / "logreg"
    assert ckpt.load(run, "torch", "logreg").step == 2 and ckpt.load(run, "jax", "logreg") is None
    assert cli.main([*ARGS, "--out", str(tmp_path), "--resume"]) == 0
    _assert_same(run, reference, ("torch", "jax"))
    assert sorted(_progress_steps(run)) == sorted(_steps_in_order(("torch", "jax")))


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_killed_process_of_several_resumes_to_the_same_parameters(framework: str, tmp_path: Path, reference: Path,
                                                                  child_path: None,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """``--processes 2``: process 0 (the checkpoint writer) gets SIGKILL before step 3; the launcher ends the run
    naming it; ``--resume`` restarts both processes from step 3."""
    launch = procs.run_processes

    def faulty(fw: str, model: str, n: int, argv: list[str], out: Path, progress: Path | None, **kw: object) -> object:
        return launch(fw, model, n, ["kill", "0", "3", *argv], out, progress, module="fault_train", **kw)

    args = [*ARGS, "--frameworks", framework, "--processes", "2", "--out", str(tmp_path)]
    monkeypatch.setattr(procs, "run_processes", faulty)
    assert cli.main(args) == 1
    run = tmp_path / "logreg"
    assert ckpt.load(run, framework, "logreg").step == 3
    monkeypatch.setattr(procs, "run_processes", launch)
    assert cli.main([*args, "--resume"]) == 0
    _assert_same(run, reference, (framework,), TOL)
    assert sorted(_progress_steps(run)) == sorted(_steps_in_order((framework,)))


def _descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (Linux /proc)."""
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        for child in (task / "children").read_text().split():
            out += [int(child), *_descendants(int(child))]
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def test_killed_launcher_takes_its_processes_along_and_resumes(tmp_path: Path, reference: Path,
                                                                child_path: None) -> None:
    """SIGKILL of the ``--processes 2`` launcher (torch: launcher -> torchrun agent -> worker, the longest chain)
    while process 1 hangs before step 3: no process is left training, and ``--resume`` finishes the run."""
    args = [*ARGS, "--frameworks", "torch", "--processes", "2", "--step-timeout", "600", "--out", str(tmp_path)]
    launcher = subprocess.Popen([sys.executable, "-m", "fault_train", "hang", "1", "3", *args],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run, deadline = tmp_path / "logreg", time.monotonic() + 300
    while not (ckpt.path(run, "torch").exists() and ckpt.load(run, "torch", "logreg").step == 3):
        assert time.monotonic() < deadline and launcher.poll() is None, "no checkpoint of step 3"
        time.sleep(0.5)
    children = _descendants(launcher.pid)
    assert len(children) >= 4  # 2 torchrun agents and their workers
    launcher.kill()
    launcher.wait()
    deadline = time.monotonic() + 30
    while any(map(_alive, children)):
        assert time.monotonic() < deadline, [c for c in children if _alive(c)]
        time.sleep(0.2)
    assert cli.main([*args, "--resume"]) == 0
    _assert_same(run, reference, ("torch",), TOL)
    assert sorted(_progress_steps(run)) == sorted(_steps_in_order(("torch",)))


@pytest.mark.slow  # ~100 s on 2 shared cores: two subprocesses, each spawning 2 torch replicas and compiling JAX
def test_two_devices_resume_after_a_kill(tmp_path: Path, reference: Path, child_path: None) -> None:
    """``--devices 2`` (torch: 2 spawned gloo replicas, JAX: 2 host devices, in a subprocess for XLA_FLAGS):
    SIGKILL before jax's step 2, after torch finished; the resumed run equals one device."""
    args = [*ARGS, "--devices", "2", "--out", str(tmp_path)]
    done = subprocess.run([sys.executable, "-m", "fault_train", "kill", "0", "2", *args], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == -9, done.stderr[-2000:]
    done = subprocess.run([sys.executable, "-m", "compare.train", *args, "--resume"], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    _assert_same(tmp_path / "logreg", reference, ("torch", "jax"), TOL)


def test_crash_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path: Path, reference: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The 3rd save writes half a file and fails (after step 2's progress line): the checkpoint of step 2 stays
    whole, no temp file is left, and --resume redoes step 2 once."""
    import safetensors.numpy

    save_file, calls = safetensors.numpy.save_file, []

    def crash(tensors: dict, filename: str, metadata: dict | None = None) -> None:
        calls.append(filename)
        if len(calls) == 3:
            Path(filename).write_bytes(b"\x00" * 100)
            raise OSError("disk full")
        save_file(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safetensors.numpy, "save_file", crash)
    args = [*ARGS, "--frameworks", "torch", "--out", str(tmp_path)]
    with pytest.raises(OSError, match="disk full"):
        cli.main(args)
    run = tmp_path / "logreg"
    assert ckpt.load(run, "torch", "logreg").step == 2
    assert [p.name for p in (run / "checkpoint").iterdir()] == ["torch.safetensors"]
    assert _progress_steps(run) == [("torch", 0), ("torch", 1), ("torch", 2)]
    monkeypatch.setattr(safetensors.numpy, "save_file", save_file)
    assert cli.main([*args, "--resume"]) == 0
    _assert_same(run, reference, ("torch",))
    assert _progress_steps(run) == [("torch", i) for i in range(STEPS)]


@pytest.mark.parametrize("change, field", [
    (["--lr", "0.4"], "lr 0.5 in the checkpoint, 0.4 now"),
    (["--seed", "1"], "seed 0 in the checkpoint, 1 now"),
    (["--clipping", "ghost"], "clipping 'bk' in the checkpoint, 'ghost' now"),
    (["--devices", "2", "--frameworks", "torch"], "world size 1 in the checkpoint, 2 now"),
    (["--weights", "OTHER"], "initial weights"),
    (["--steps", "2"], "steps 5 in the checkpoint, 2 now"),
])
def test_other_run_is_refused_before_any_step(change: list[str], field: str, reference: Path, tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    if "OTHER" in change:
        from compare.weights import init_weights, save_weights

        change = ["--weights", str(save_weights(tmp_path / "w.safetensors", init_weights(1, "logreg"), "logreg"))]
    before = {p: p.read_bytes() for p in reference.rglob("*") if p.is_file()}
    assert cli.main([*ARGS, *change, "--out", str(reference.parent), "--resume"]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and errors[0].startswith("cannot --resume from ") and field in errors[0], errors
    assert {p: p.read_bytes() for p in reference.rglob("*") if p.is_file()} == before  # nothing touched


def test_other_versions_and_nothing_to_resume_are_refused(reference: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    real = ckpt.versions
    monkeypatch.setattr(ckpt, "versions", lambda: {**real(), "torch": "0.0.1"})
    assert cli.main([*ARGS, "--out", str(reference.parent), "--resume"]) == 2
    assert "torch " in caplog.records[-1].getMessage() and "'0.0.1' now" in caplog.records[-1].getMessage()
    monkeypatch.setattr(ckpt, "versions", real)
    assert cli.main([*ARGS, "--out", str(tmp_path), "--resume"]) == 2
    assert "holds no training run" in caplog.records[-1].getMessage()
    assert not (tmp_path / "logreg").exists()
