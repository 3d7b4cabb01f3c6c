"""What every output records about how it was made: command, commit, versions, CPU, date.

One helper for every writer (``compare.run``'s results.json meta, ``compare.train``'s train.json, the scripts'
breakdowns, profiles, cost models and panels), so that each committed result says which command at which
commit on which machine made it; ``scripts/reproduce.sh`` refuses a dirty tree, so a committed result records a
clean commit. Standard library only (the versions come from ``compare.lock``, which imports no framework).
"""
from __future__ import annotations

import datetime as dt
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

from compare.lock import lock_status, versions

ROOT = Path(__file__).resolve().parents[1]
FIELDS: tuple[str, ...] = ("command", "git_commit", "date", "device", "cores", "platform", "versions", "lock")


# Paths that hold results and prose, not code: a run writing into a committed results directory (what
# ``compare.paper`` does) would otherwise mark itself, and every later output, as made from a modified tree.
NOT_CODE: tuple[str, ...] = ("paper", "docs", "results", "*.md")


def git_commit(root: Path = ROOT, *, code_only: bool = True) -> str | None:
    """HEAD's sha, with ``-dirty`` when tracked files differ from it (with ``code_only``, files outside
    ``NOT_CODE``: the code that ran); None outside a git checkout."""
    spec = ["--", ".", *(f":(exclude){p}" for p in NOT_CODE)] if code_only else []
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", *spec], cwd=root,
                               capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def cpu_model() -> str:
    """``model name`` of /proc/cpuinfo, else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def command_line(argv: list[str] | None = None, prog: str | None = None) -> str:
    """The command as typed: ``prog`` (e.g. ``python -m compare.train``; default ``python <script>``) and the
    arguments (``sys.argv[1:]`` when None), shell-quoted."""
    args = sys.argv[1:] if argv is None else list(argv)
    if prog is None:
        script = Path(sys.argv[0])
        try:
            script = script.resolve().relative_to(ROOT)
        except ValueError:
            pass
        prog = f"python {script}"
    return " ".join([prog, *(shlex.quote(a) for a in args)])


def provenance(command: str, device: str | None = None) -> dict:
    """{command, git_commit, date (UTC, ISO), device (the CPU model unless given), cores, platform, versions,
    lock}: the fields every output's meta carries (``FIELDS``)."""
    return {"command": command, "git_commit": git_commit(),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "device": device or cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
            "versions": versions(), "lock": lock_status()}


def missing(meta: dict | None) -> list[str]:
    """The ``FIELDS`` a meta lacks (or holds empty), for checks of committed outputs."""
    meta = meta or {}
    return [f for f in FIELDS if not meta.get(f)]
