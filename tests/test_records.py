"""The results schema (compare.benchmark.records): committed results stay readable, another version fails with
one line naming both versions, records are checked against the field registry."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from compare.benchmark.records import (
    FIELDS, LEGACY_VERSION, SCHEMA_VERSION, TIMING_FIELDS, SchemaVersionError, failure_record, load_results,
    parse_points, point_record,
)
from compare.benchmark.results import load_points, write_results

PAPER = Path(__file__).resolve().parents[1] / "paper"
COMMITTED = ["cpu", "cpu-suite", "cpu-suite-seq-goal"]  # the first sweep, the study, a later partial run


@pytest.mark.parametrize("name", COMMITTED)
def test_committed_results_and_points_are_read_as_version_1(name):
    results = load_results(PAPER / name)
    assert results.schema_version == LEGACY_VERSION and results.timings
    assert all(r["model"] for r in results.timings)  # filled in where the record predates the field
    ok = [r for r in results.timings if r["status"] == "ok"]
    assert ok and all(r["median_ms"] > 0 for r in ok)
    records, torn = parse_points((PAPER / name / "points.jsonl").read_text().splitlines(), name)
    assert torn == 0 and len(records) >= len(results.timings)


def _record(**kw) -> dict:
    spec = {"model": "logreg", "framework": "torch", "kind": "dp", "method": "sgd", "batch_size": 8,
            "dtype": "float32", "device": "cpu", "loss": "nll_log_softmax"}
    return {**failure_record(spec, "ok", ""), "median_ms": 1.0, **kw}


def test_another_schema_version_fails_naming_both_versions(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"schema_version": 99, "meta": {}, "timings": []}))
    with pytest.raises(SchemaVersionError, match=f"version 99, this code reads version {SCHEMA_VERSION}"):
        load_results(tmp_path)
    points = tmp_path / "points.jsonl"
    points.write_text(json.dumps({**_record(), "schema_version": 3}) + "\n")
    with pytest.raises(SchemaVersionError, match=f"points.jsonl:1: results schema version 3, this code reads "
                                                 f"version {SCHEMA_VERSION}"):
        load_points(points)


def test_written_results_carry_the_version_and_read_back(tmp_path):
    rec = _record(rounds_ms=[1.0, 1.1], ratios={})
    write_results(tmp_path / "results.json", meta={"cores": 2}, agreement=None, floor=None, timings=[rec])
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["schema_version"] == SCHEMA_VERSION and data["timings"][0]["schema_version"] == SCHEMA_VERSION
    back = load_results(tmp_path)
    assert back.timings[0]["rounds_ms"] == [1.0, 1.1] and back.meta == {"cores": 2}


def test_records_are_checked_against_the_field_registry():
    assert set(TIMING_FIELDS) <= set(FIELDS)
    with pytest.raises(ValueError, match="field 'median_ms' is str"):
        point_record(_record(median_ms="fast"))
    incomplete = _record()
    del incomplete["status"]
    with pytest.raises(ValueError, match=r"missing field\(s\) \['status'\]"):
        point_record(incomplete)
    assert point_record(_record(my_new_metric=3))["my_new_metric"] == 3  # unregistered fields ride along
