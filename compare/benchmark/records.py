"""The schema of the benchmark's results: point records (``points.jsonl``) and the results file (``results.json``).

One registry, ``FIELDS``, names every field a point record may carry, its type and what it means; the writer
(``compare.benchmark.point``, ``sweep``, ``results``) and every reader (``summary``, ``suite``, ``figures``,
``compare.report``) go through ``point_record`` / ``read_points`` / ``load_results``. Adding a metric is
one ``Field`` entry. Each record and each results file carries ``schema_version``; a file of a version this code
does not read fails with one line naming both versions. Files written before the version was recorded are
version 1 (``LEGACY_VERSION``): the same fields without the paired-timing ones, read as they are.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compare.spec import DEFAULT_MODEL

SCHEMA_VERSION = 2  # 2: paired interleaved rounds (``rounds_ms``, ``pair``, ``ratios``, ``warnings``)
LEGACY_VERSION = 1  # no ``schema_version`` key: written before the schema was versioned
READABLE_VERSIONS: tuple[int, ...] = (LEGACY_VERSION, SCHEMA_VERSION)

PointRecord = dict[str, Any]  # a point record: keys from FIELDS (validated by ``check_record``)

_NUM = (int, float)


class SchemaVersionError(ValueError):
    """A results file or record of a schema version this code does not read."""


@dataclass(frozen=True)
class Field:
    """One field of a point record. ``required``: present in every record, ``None`` where the point has no value
    (a failed point); ``types``: the accepted JSON types besides ``None``."""

    name: str
    types: tuple[type, ...]
    doc: str
    required: bool = False


_REGISTRY: tuple[Field, ...] = (
    # identity of a point (see KEY_FIELDS)
    Field("model", (str,), "workload, a compare.spec.MODELS name", required=True),
    Field("framework", (str,), "torch or jax", required=True),
    Field("method", (str,), "the timed method (per-sample method, dp step, peer)", required=True),
    Field("kind", (str,), "compare.benchmark.targets.TARGETS key", required=True),
    Field("batch_size", (int,), "examples per batch (per device for the distributed kind)", required=True),
    Field("dtype", (str,), "float32 or float64", required=True),
    Field("device", (str,), "cpu or cuda", required=True),
    Field("loss", (str,), "the loss of the timed call"),
    Field("chunk_size", (int,), "chunked per-sample methods only"),
    Field("weights", (str,), "path of the weights file"),
    # timing (milliseconds) and outcome
    Field("median_ms", _NUM, "median of the timed calls (paired: of the rounds)", required=True),
    Field("iqr_ms", _NUM, "interquartile range of the timed calls", required=True),
    Field("min_ms", _NUM, "fastest timed call", required=True),
    Field("repeats", (int,), "timed calls", required=True),
    Field("compile_ms", _NUM, "compile time, measured apart", required=True),
    Field("first_call_ms", _NUM, "first call, compile included", required=True),
    Field("compile_source", (str,), "aot (jax lower+compile) or first_call_excess"),
    Field("times_ms", (list,), "every timed call of the point's own process"),
    Field("peak_mem_bytes", (int,), "peak memory above the baseline (GPU allocator on cuda, RSS on cpu)",
          required=True),
    Field("status", (str,), "one of STATUSES", required=True),
    Field("reason", (str,), "why a point is not ok", required=True),
    # memory and process detail
    Field("baseline_rss_bytes", (int,), "RSS before the timed calls"),
    Field("peak_rss_bytes", (int,), "VmHWM after the timed calls"),
    Field("peak_rss_delta_bytes", (int,), "peak_rss_bytes - baseline_rss_bytes"),
    Field("gpu_peak_bytes", (int,), "allocator peak"),
    Field("gpu_peak_delta_bytes", (int,), "allocator peak above the baseline"),
    Field("gpu_peak_cumulative", (bool,), "JAX GPU peak is the max over earlier points of the process"),
    Field("precision", (dict,), "torch GPU precision flags"),
    Field("threads", (dict,), "thread counts of the point process"),
    Field("wall_s", _NUM, "seconds the point took, everything included"),
    Field("startup", (dict,), "interpreter, import and device-initialisation seconds of the process"),
    Field("index_in_process", (int,), "points measured earlier by the same process"),
    Field("loadavg_1m_before", _NUM, "1-minute load average when the point started"),
    # what exactly was timed (compare.benchmark.targets.Target.details)
    Field("per_sample_method", (str,), "the per-sample method inside a materialising dp step"),
    Field("clipping", (str,), "the dp step's clipping strategy"),
    Field("dp_hparams", (dict,), "lr, clip, noise_multiplier of the dp step"),
    Field("peer_settings", (dict,), "a peer library's settings"),
    Field("devices", (int,), "devices of the distributed kind"),
    Field("batch_size_per", (str,), "what batch_size counts (distributed kind)"),
    # derived
    Field("floor_ms", _NUM, "reference + writing the per-sample output once at the measured bandwidth"),
    Field("ratio_to_floor", _NUM, "per-sample time over floor_ms (paired: median of per-round ratios)"),
    # paired interleaved timing (compare.benchmark.paired); schema 2
    Field("rounds_ms", (list,), "this target's time in every interleaved round (aligned across its pair group)"),
    Field("pair", (dict,), "the pair group: id, members, rounds, calls per round, load average, seconds"),
    Field("ratios", (dict,), "baseline method -> {median, ci95, rounds, verdict...}: median of per-round ratios "
                             "with a seeded bootstrap 95% interval"),
    Field("warnings", (list,), "one line per reason not to trust the point's ratios (wide interval, busy machine)"),
    Field("unpaired_median_ms", _NUM, "median of the point's own process (the unpaired protocol)"),
    Field("schema_version", (int,), "SCHEMA_VERSION of the writer"),
)
FIELDS: dict[str, Field] = {f.name: f for f in _REGISTRY}
# The fields of every record (None where a failed point has no value).
TIMING_FIELDS: tuple[str, ...] = tuple(f.name for f in _REGISTRY if f.required and f.name not in
                                       ("loss", "chunk_size"))
# What identifies a point: a resumed run skips a planned point whose key is already recorded. Records written
# before ``model`` existed are the default workload's (``point_key`` fills it in).
KEY_FIELDS: tuple[str, ...] = ("model", "framework", "kind", "method", "batch_size", "dtype", "device", "loss",
                               "chunk_size")
# "not_applicable": the method cannot run on the point's workload (the reason says why); "skipped": it could,
# but was not run here (a missing library, memory, the budget).
STATUSES: tuple[str, ...] = ("ok", "oom", "error", "timeout", "skipped", "not_applicable")


def point_key(record: dict) -> tuple:
    return tuple(record.get(f) or DEFAULT_MODEL if f == "model" else record.get(f) for f in KEY_FIELDS)


def failure_record(spec: dict, status: str, reason: str, **extra: object) -> PointRecord:
    """A record for a point that produced no timing: every required field present, the numbers ``None``."""
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}; expected one of {STATUSES}")
    record: PointRecord = {f: None for f in TIMING_FIELDS}
    record.update({k: spec.get(k) for k in (*KEY_FIELDS, "weights")}, status=status, reason=reason)
    record.update(extra, schema_version=SCHEMA_VERSION)
    return record


def check_version(version: int, where: str) -> None:
    if version not in READABLE_VERSIONS:
        raise SchemaVersionError(f"{where}: results schema version {version}, this code reads version "
                                 f"{SCHEMA_VERSION} (and {LEGACY_VERSION}, the unversioned files)")


def check_record(record: dict, where: str = "record") -> PointRecord:
    """``record`` as a point record of this schema: its version readable, required fields present, every
    registered field of its registered type (unregistered fields ride along unchecked). Returns the record,
    ``model`` filled in for records written before it existed."""
    check_version(record.get("schema_version", LEGACY_VERSION), where)
    record.setdefault("model", None)
    if record["model"] is None:
        record["model"] = DEFAULT_MODEL
    missing = [f for f in TIMING_FIELDS if f not in record]
    if missing:
        raise ValueError(f"{where}: missing field(s) {missing}")
    for name, value in record.items():
        f = FIELDS.get(name)
        if f is not None and value is not None and not isinstance(value, f.types):
            raise ValueError(f"{where}: field {name!r} is {type(value).__name__}, expected "
                             f"{' or '.join(t.__name__ for t in f.types)}")
    return record


def point_record(record: dict) -> PointRecord:
    """A record as written: stamped with ``SCHEMA_VERSION`` and checked."""
    record["schema_version"] = SCHEMA_VERSION
    return check_record(record, "new record")


def parse_points(lines: list[str], where: str) -> tuple[list[PointRecord], int]:
    """Complete JSON lines as checked records, and the count of torn lines (a kill mid-write)."""
    records, torn = [], 0
    for i, line in enumerate(lines, 1):
        try:
            raw = json.loads(line)
        except json.JSONDecodeError:
            torn += 1
            continue
        records.append(check_record(raw, f"{where}:{i}"))
    return records, torn


@dataclass
class ResultsFile:
    """``results.json``: the run's meta, the agreement report, the measured floor and every point record."""

    meta: dict
    agreement: dict | None
    floor: dict | None
    timings: list[PointRecord]
    schema_version: int = SCHEMA_VERSION
    extra: dict = field(default_factory=dict)  # keys of the file this schema does not name, kept as they are

    def to_json(self) -> dict:
        return {"schema_version": SCHEMA_VERSION, "meta": self.meta, "agreement": self.agreement,
                "floor": self.floor, "timings": self.timings, **self.extra}


def results_from_json(data: dict, where: str) -> ResultsFile:
    """A parsed results file (any readable version) as a ``ResultsFile``; its records checked."""
    version = data.get("schema_version", LEGACY_VERSION)
    check_version(version, where)
    if "timings" not in data:
        raise ValueError(f"{where}: not a compare.run results file (no 'timings')")
    timings = [check_record(r, f"{where}: timings[{i}]") for i, r in enumerate(data["timings"])]
    known = {"schema_version", "meta", "agreement", "floor", "timings"}
    return ResultsFile(meta=data.get("meta") or {}, agreement=data.get("agreement"), floor=data.get("floor"),
                       timings=timings, schema_version=version,
                       extra={k: v for k, v in data.items() if k not in known})


def load_results(path: Path | str) -> ResultsFile:
    """DIR/results.json (or the file itself), any readable schema version."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    return results_from_json(json.loads(path.read_text()), str(path))
