"""compare.lock (installed vs locked vs oldest supported) and --out checks shared by every command line."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from compare import lock
from compare.paths import output_dir


def test_the_committed_lock_pins_the_frameworks_exactly():
    pins = lock.read_lock()
    for pkg in ("torch", "jax", "jaxlib", "flax", "optax", "opacus", "jax-privacy", "numpy"):
        assert pkg in pins, f"{pkg} missing from requirements/lock.txt"
    assert "--hash=sha256:" in lock.LOCK_FILE.read_text()  # pip install --require-hashes can use it


def test_lock_status_lists_each_difference(tmp_path, monkeypatch):
    installed = {"torch": "2.15.0+cpu", "jax": "0.12.0.1", "flax": "0.12.8"}
    monkeypatch.setattr(lock, "installed", installed.get)
    path = tmp_path / "lock.txt"
    path.write_text("torch==2.15.0 \\\n    --hash=sha256:00\njax==0.12.0.1\nflax==0.12.12\nscipy==1.18.1\n")
    s = lock.lock_status(path)
    assert s["matches"] is False
    assert s["differs"] == {"flax": {"installed": "0.12.8", "locked": "0.12.12"},
                            "scipy": {"installed": None, "locked": "1.18.1"}}
    assert s["builds"] == {"torch": "2.15.0+cpu"}  # same release, other build: not a difference
    assert "2 packages differ" in lock.summary(s) and "flax 0.12.8 (lock 0.12.12)" in lock.summary(s)
    path.write_text("torch==2.15.0\njax==0.12.0.1\n")
    assert lock.lock_status(path)["matches"] is True
    assert lock.lock_status(tmp_path / "absent.txt")["matches"] is None


def test_below_oldest_compares_release_numbers_not_strings(monkeypatch):
    monkeypatch.setattr(lock, "installed", {"torch": "2.9.1+cu130", "jax": "0.11.10", "flax": "0.12.12"}.get)
    assert lock.below_oldest() == {"torch": {"installed": "2.9.1+cu130", "oldest": lock.OLDEST_SUPPORTED["torch"]}}


def test_output_dir_accepts_new_and_existing_directories(tmp_path):
    assert output_dir(str(tmp_path)) == tmp_path
    assert output_dir(str(tmp_path / "a" / "b")) == tmp_path / "a" / "b"


def test_output_dir_rejects_a_file_or_a_path_under_one(tmp_path):
    f = tmp_path / "results.json"
    f.write_text("{}")
    with pytest.raises(argparse.ArgumentTypeError, match="exists and is not a directory"):
        output_dir(str(f))
    with pytest.raises(argparse.ArgumentTypeError, match="is a file, not a directory"):
        output_dir(str(f / "sub"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_output_dir_rejects_an_unwritable_parent(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    with pytest.raises(argparse.ArgumentTypeError, match="permission denied"):
        output_dir(str(ro / "out"))


@pytest.mark.parametrize("module", ["compare.run", "compare.train", "compare.figures"])
def test_out_naming_a_file_is_one_line_not_a_traceback(module, tmp_path):
    f = tmp_path / "taken"
    f.write_text("")
    argv = [sys.executable, "-m", module, *(["paper/cpu"] if module == "compare.figures" else []), "--out", str(f)]
    root = Path(__file__).resolve().parents[1]
    p = subprocess.run(argv, capture_output=True, text=True, cwd=root, timeout=120)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr and "exists and is not a directory" in p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith(f"python -m {module}: error: argument --out")
