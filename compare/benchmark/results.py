"""The results data on disk: the append-only ``points.jsonl``, ``meta`` and ``results.json``.

A record is a flat dict of the fields ``compare.benchmark.records.FIELDS`` registers (the schema, its version
and its checks live there). Each finished point is appended and
flushed at once, so a run killed at any moment keeps every finished point; a line cut off by the kill is
dropped (and the file rewritten without it) when the run resumes.
"""
from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from compare.env import memory_settings
from compare.env_vars import behaviour_env
from compare.benchmark.records import (  # noqa: F401 - the schema's names, importable from here as before
    KEY_FIELDS, STATUSES, TIMING_FIELDS, ResultsFile, failure_record, parse_points, point_key, point_record,
)
from compare.lock import below_oldest
from compare.provenance import cpu_model, provenance
from compare.provenance import git_commit as _git_commit  # noqa: F401 - importable from here as before

log = logging.getLogger("compare.benchmark.results")



def append_point(path: Path, record: dict) -> None:
    """One JSON line (stamped with the schema version), flushed and fsynced before returning: the point survives a
    kill right after."""
    with open(path, "a") as fh:
        fh.write(json.dumps(point_record(record)) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def load_points(path: Path) -> list[dict]:
    """Every complete record of ``path`` (checked against the schema); a torn last line (a kill mid-write) is
    dropped and the file repaired."""
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    records, torn = parse_points(lines, str(path))
    if torn:
        log.warning("%s: dropped %d incomplete line(s) left by an interrupted run", path, torn)
        good = []
        for line in lines:
            try:
                json.loads(line)
                good.append(line)
            except json.JSONDecodeError:
                pass
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(g + "\n" for g in good))
        os.replace(tmp, path)
    return records


def device_name(device: str) -> str:
    """The CPU model, or the GPU's name (asked of torch, which the parent process has imported already)."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(0)
    return cpu_model()


def relevant_env(env: dict[str, str]) -> dict[str, str]:
    """The variables that change what a point measures (``compare.env_vars.BEHAVIOUR_ENV``, by name): recorded in
    meta, identical for every point."""
    return behaviour_env(env)


def make_meta(*, argv: list[str], device: str, env: dict[str, str], config: dict) -> dict:
    """``compare.provenance``'s fields (command, commit, date, device, versions ...) and the run's settings."""
    return {
        **provenance(" ".join(["python -m compare.run", *argv]), device_name(device)),
        "device_kind": device,
        "cores_available": len(os.sched_getaffinity(0)),
        "below_oldest_supported": below_oldest(),
        "xla_flags": env.get("XLA_FLAGS", ""),
        "env": relevant_env(env),
        "config": config,
        "python_executable": sys.executable,
        "memory_settings": memory_settings(env),
        **({"gpu": _gpu_report()} if device.startswith("cuda") else {}),
    }


def _gpu_report() -> dict:
    """``python -m compare.env``'s report (both frameworks' CUDA/cuDNN versions, devices, precision flags)."""
    from compare.env import report

    return report()


def write_results(path: Path, *, meta: dict, agreement: dict | None, floor: dict | None, timings: list[dict]) -> Path:
    """Atomic write of ``results.json`` = {schema_version, meta, agreement, floor, timings}."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    data = ResultsFile(meta=meta, agreement=agreement, floor=floor, timings=[point_record(r) for r in timings])
    tmp.write_text(json.dumps(data.to_json(), indent=1))
    os.replace(tmp, path)
    return path
