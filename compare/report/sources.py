"""The committed results under one directory (``paper/``): every JSON file, read once, and its provenance.

Benchmark runs (``DIR/results.json``) are read through ``compare.benchmark.records.load_results`` (the typed
records, schema checked); every other file (training, panels, cost models, profiles, bfloat16) as the JSON its
writer stores. Provenance (command, commit, date, CPU, versions) is read from wherever each writer put it; a
field a file does not carry is reported as not recorded, never guessed.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from compare.benchmark.records import ResultsFile, load_results
from compare.report.markdown import NOT_RECORDED

STUDY_FLAG = "--suite"  # a benchmark run of the study across workloads says so in its command


@dataclass(frozen=True)
class Provenance:
    """Where one results file came from; ``None`` for what the file does not record."""

    file: str
    command: str | None
    commit: str | None
    date: str | None
    cpu: str | None
    torch: str | None
    jax: str | None
    lock_matches: bool | None

    @property
    def dirty(self) -> bool:
        return bool(self.commit) and ("dirty" in self.commit)

    def cell(self, name: str) -> str:
        v = getattr(self, name)
        if v is None:
            return NOT_RECORDED
        if name == "commit":
            return f"`{v[:7]}`" + (" (uncommitted changes)" if self.dirty else "")
        if name == "lock_matches":
            return "yes" if v else "no"
        return f"`{v}`" if name == "command" else str(v)


def _first(*values: object) -> object:
    return next((v for v in values if v not in (None, "", {})), None)


def _cpu(value: object) -> str | None:
    return value.get("model") if isinstance(value, dict) else value


def provenance(file: str, data: object) -> Provenance:
    """The provenance a results file records (its writers put it in ``meta``, at the top or in ``machine``)."""
    if not isinstance(data, dict):
        return Provenance(file, None, None, None, None, None, None, None)
    meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
    if not meta and isinstance(data.get("runs"), list) and data["runs"]:
        meta = data["runs"][0].get("meta") or {}
    machine = data.get("machine") if isinstance(data.get("machine"), dict) else {}
    versions = _first(meta.get("versions"), data.get("versions"), machine) or {}
    cpu = _first(meta.get("cpu"), meta.get("device") if meta.get("device_kind") == "cpu" else None,
                 data.get("cpu"), machine.get("cpu"))
    lock = meta.get("lock") if isinstance(meta.get("lock"), dict) else {}
    return Provenance(
        file=file,
        command=_first(meta.get("command"), data.get("command")),
        commit=_first(meta.get("git_commit"), meta.get("commit"), data.get("commit"), data.get("git_commit")),
        date=_first(meta.get("date"), meta.get("created")),
        cpu=_cpu(cpu),
        torch=versions.get("torch"), jax=versions.get("jax"),
        lock_matches=lock.get("matches"))


class Paper:
    """The results directory: JSON files by path relative to it, benchmark runs typed, figures listed."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: no such results directory")
        self._runs: dict[str, ResultsFile] = {}
        self._json: dict[str, object] = {}

    def path(self, rel: str) -> Path:
        return self.root / rel

    def has(self, rel: str) -> bool:
        return (self.root / rel).is_file()

    def json(self, rel: str) -> object:
        if rel not in self._json:
            self._json[rel] = json.loads((self.root / rel).read_text())
        return self._json[rel]

    def run(self, rel_dir: str) -> ResultsFile:
        """A benchmark run's ``results.json`` (typed, schema checked)."""
        if rel_dir not in self._runs:
            self._runs[rel_dir] = load_results(self.root / rel_dir / "results.json")
        return self._runs[rel_dir]

    @cached_property
    def json_files(self) -> list[str]:
        """Every results JSON under the directory (the runs' environment snapshots excluded: no results)."""
        return sorted(p.relative_to(self.root).as_posix() for p in self.root.rglob("*.json")
                      if p.name != "sweep_env.json")

    @cached_property
    def runs(self) -> list[str]:
        """Directories holding a benchmark ``results.json`` (with ``timings``), relative to the root."""
        out = []
        for rel in self.json_files:
            if rel.endswith("results.json") and "timings" in self.json(rel):
                out.append(rel[: -len("/results.json")])
        return out

    @cached_property
    def study_runs(self) -> list[str]:
        """The study's runs (``compare.run --suite``), oldest first by their recorded date."""
        runs = [r for r in self.runs if STUDY_FLAG in (self.run(r).meta.get("command") or "")]
        return sorted(runs, key=lambda r: self.run(r).meta.get("date") or "")

    def provenance(self) -> list[Provenance]:
        return [provenance(rel, self.json(rel)) for rel in self.json_files]

    @cached_property
    def figures(self) -> list[Path]:
        """Every committed PNG figure, as a path from the working directory."""
        return sorted(self.root.rglob("*.png"))
