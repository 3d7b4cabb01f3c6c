"""A real ``python -m compare.run`` interrupted while a point's process measures: SIGTERM to the run alone, or
SIGINT to its whole process group (what Ctrl-C in a terminal sends). Either way: the measuring process is gone,
no temporary directory is left, the finished point is kept, and the run prints one line that says so and how to
resume, without a traceback. Tiny sizes: two points of one framework at B=1."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _point_children(pid: int) -> list[int]:
    """The run's child processes that measure a point."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            try:
                if b"compare.benchmark.point" in Path(f"/proc/{child}/cmdline").read_bytes():
                    found.append(child)
            except OSError:
                pass
    return found


def _points(out: Path) -> int:
    path = out / "points.jsonl"
    return len(path.read_text().splitlines()) if path.is_file() else 0


@pytest.mark.parametrize("signum, group", [(signal.SIGTERM, False), (signal.SIGINT, True)], ids=["TERM", "INT"])
def test_an_interrupt_kills_the_point_cleans_up_and_says_how_to_resume(tmp_path, signum, group):
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    tmp.mkdir()
    args = ["--batch-sizes", "1", "--frameworks", "jax", "--methods", "vmap", "--repeats", "1", "--min-seconds", "0",
            "--no-agreement", "--no-figures", "--group-points", "none", "--out", str(out)]
    with open(tmp_path / "stderr", "w") as err, open(tmp_path / "stdout", "w") as std:
        proc = subprocess.Popen([sys.executable, "-m", "compare.run", *args], cwd=ROOT, stdout=std, stderr=err,
                                env={**os.environ, "TMPDIR": str(tmp)}, start_new_session=True)
        deadline, children = time.monotonic() + 240, []
        while time.monotonic() < deadline and proc.poll() is None:
            children = _point_children(proc.pid) if _points(out) >= 1 else []
            if children:
                break
            time.sleep(0.02)
        assert children, "the second point's process never started"
        os.killpg(proc.pid, signum) if group else os.kill(proc.pid, signum)
        code = proc.wait(timeout=60)
    stderr = (tmp_path / "stderr").read_text()
    assert code == 128 + signum, stderr
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    name = signal.Signals(signum).name
    assert last.startswith(f"interrupted ({name}): kept 1 finished point(s) in {out / 'points.jsonl'}"), last
    assert last.endswith(" --resume") and f"--out {out}" in last
    alive = {c: Path(f"/proc/{c}/stat").read_text() for c in children if Path(f"/proc/{c}").exists()}
    assert not alive, (alive, stderr)  # the measuring process is gone, not orphaned
    assert list(tmp.iterdir()) == []  # no /tmp/point-* (nor floor-*) left behind
    assert _points(out) == 1 and not (out / "results.json").exists()
