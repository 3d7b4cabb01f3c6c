"""A results directory never loses a run: an earlier run's files are moved aside, never overwritten.

A command that writes its files into a directory that already holds some of them (``compare.run`` without
``--resume``, ``compare.train``) first moves those files into ``DIR/runs/<date>-<time>/`` (the earlier run's
date, from its own record where it has one, else the files' modification time) and says so in one line. What
each command writes is its ``RUN_FILES`` entry; nothing else in the directory (weights files, other commands'
outputs, ``runs/`` itself) is touched. So the README's commands can run in any order into the default
``results/`` and every run stays on disk.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
from pathlib import Path

log = logging.getLogger("compare.rundir")

ARCHIVE = "runs"
# What each command writes into its directory (files and folders), i.e. what a new run would replace.
RUN_FILES: dict[str, tuple[str, ...]] = {
    "sweep": ("results.json", "points.jsonl", "points.jsonl.prev", "sweep_env.json", "agreement", "figures"),
    "agreement": ("agreement.json", "agreement"),
    "train": ("train.json", "train_progress.jsonl", "train_loss.pdf", "train_loss.png", "checkpoint"),
}
DATE_SOURCES = {"sweep": ("results.json", "meta", "date"), "train": ("train.json", "meta", "created")}


def existing(out: Path, kind: str) -> list[Path]:
    """The files of a ``kind`` run present in ``out``."""
    return [out / name for name in RUN_FILES[kind] if (out / name).exists()]


def _stamp(out: Path, kind: str, paths: list[Path]) -> str:
    """The earlier run's date as ``YYYYMMDD-HHMMSS``: its record's own date, else the newest file's mtime."""
    when = None
    source = DATE_SOURCES.get(kind)
    if source is not None and (out / source[0]).is_file():
        try:
            when = dt.datetime.fromisoformat(str(json.loads((out / source[0]).read_text())[source[1]][source[2]]))
        except (OSError, ValueError, KeyError, TypeError):
            when = None
    if when is None:
        when = dt.datetime.fromtimestamp(max(p.stat().st_mtime for p in paths))
    return when.strftime("%Y%m%d-%H%M%S")


def archive(out: Path, kind: str, keep: tuple[Path, ...] = ()) -> Path | None:
    """Move the files of an earlier ``kind`` run in ``out`` to ``out/runs/<stamp>/``; returns that folder (None:
    nothing to move). ``keep``: files to leave in place (e.g. the ``--agreement-file`` this run reads)."""
    keep_resolved = {p.resolve() for p in keep}
    paths = [p for p in existing(out, kind) if p.resolve() not in keep_resolved]
    if not paths:
        return None
    stamp = _stamp(out, kind, paths)
    dest, n = out / ARCHIVE / stamp, 1
    while dest.exists():
        n += 1
        dest = out / ARCHIVE / f"{stamp}-{n}"
    dest.mkdir(parents=True)
    for p in paths:
        os.replace(p, dest / p.name)
    return dest


def describe(paths: list[Path]) -> str:
    """``results.json, points.jsonl (12 points), figures/``: what an earlier run left."""
    parts = []
    for p in paths:
        if p.is_dir():
            parts.append(p.name + "/")
        elif p.name == "points.jsonl":
            with open(p) as fh:
                parts.append(f"points.jsonl ({sum(1 for line in fh if line.strip())} points)")
        else:
            parts.append(p.name)
    return ", ".join(parts)


def keep_earlier_run(out: Path, kind: str, keep: tuple[Path, ...] = (), hint: str = "") -> Path | None:
    """``archive`` with the one line that says what moved where (``hint``: how to continue it instead)."""
    paths = [p for p in existing(out, kind) if p.resolve() not in {k.resolve() for k in keep}]
    if not paths:
        return None
    what = describe(paths)
    dest = archive(out, kind, keep)
    log.info("%s holds an earlier run (%s): moved it to %s/ so that nothing is overwritten%s", out, what, dest,
             hint)
    return dest
