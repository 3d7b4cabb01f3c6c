"""Numbers the document's prose cites, each computed from the committed runs (never typed): where one method
beats another, ranges over batch sizes, run-to-run spread, the measured write bandwidths."""
from __future__ import annotations

from compare.benchmark.records import ResultsFile
from compare.report.sources import Paper
from compare.report.tables import index, median_of_rounds, ok

NOISY_IQR = 0.20  # an IQR above this fraction of the median marks a point as noisy


def sizes(run: ResultsFile) -> list[int]:
    return sorted({r["batch_size"] for r in run.timings})


def faster_at(run: ResultsFile, fw: str, method: str, than: str) -> tuple[list[int], list[int]]:
    """Batch sizes where ``method`` is faster than ``than`` (same framework, same run), and where it is not."""
    t = index(run)
    win, lose = [], []
    for b in sizes(run):
        a, c = t.get((fw, method, b)), t.get((fw, than, b))
        if ok(a) and ok(c):
            (win if a["median_ms"] < c["median_ms"] else lose).append(b)
    return win, lose


def floor_ratios(run: ResultsFile, fw: str, method: str) -> dict[int, float]:
    t = index(run)
    return {b: t[(fw, method, b)]["ratio_to_floor"] for b in sizes(run)
            if ok(t.get((fw, method, b))) and t[(fw, method, b)].get("ratio_to_floor") is not None}


def best_per_sample(run: ResultsFile, fw: str, b: int) -> dict | None:
    recs = [r for r in run.timings if r["framework"] == fw and r["batch_size"] == b and r["kind"] == "per_sample"
            and ok(r)]
    return min(recs, key=lambda r: r["median_ms"]) if recs else None


def ratio(run: ResultsFile, fw: str, a: str, b_method: str, b: int) -> float | None:
    t = index(run)
    x, y = t.get((fw, a, b)), t.get((fw, b_method, b))
    return x["median_ms"] / y["median_ms"] if ok(x) and ok(y) else None


def iqr_spread(paper: Paper, runs: list[str]) -> dict:
    """IQR / median over every ok point of ``runs``: how many points exceed ``NOISY_IQR``, and the largest."""
    fr = [r["iqr_ms"] / r["median_ms"] for run in runs for r in paper.run(run).timings
          if ok(r) and r.get("iqr_ms") is not None and r["median_ms"] > 0]
    return {"points": len(fr), "noisy": sum(f > NOISY_IQR for f in fr), "max": max(fr, default=None),
            "median": sorted(fr)[len(fr) // 2] if fr else None}


def bandwidths(paper: Paper) -> dict[str, float]:
    """{run: the floor's write bandwidth in GB/s} of every run that measured one."""
    out = {}
    for run in paper.runs:
        floor = paper.run(run).floor or {}
        if floor.get("bytes_per_s"):
            out[run] = floor["bytes_per_s"] / 1e9
    return out


def versions_change(paper: Paper, old: list[str], new: list[str], fw: str, method: str, b: int) -> float | None:
    """old / new of the median over each environment's rounds (> 1: the new versions are faster)."""
    o = median_of_rounds([paper.run(r) for r in old], (fw, method, b))
    n = median_of_rounds([paper.run(r) for r in new], (fw, method, b))
    return o / n if o and n else None


def same_points(a: ResultsFile, b: ResultsFile, model: str) -> list[tuple[tuple, float]]:
    """(point, b / a) for every ok point of ``model`` that both runs timed."""
    ia, ib = index(a, model), index(b, model)
    return [(k, ib[k]["median_ms"] / ia[k]["median_ms"]) for k in ia if k in ib and ok(ia[k]) and ok(ib[k])]


def commits(paper: Paper) -> dict[str, list[str]]:
    """{commit (short, or 'not recorded'): files} over every results file."""
    out: dict[str, list[str]] = {}
    for p in paper.provenance():
        key = p.commit[:7] + ("-dirty" if p.dirty else "") if p.commit else "not recorded"
        out.setdefault(key, []).append(p.file)
    return out
