"""Pair groups: a method and its baselines timed interleaved in one child process (``compare.benchmark.paired``).

A pair group is one (workload, framework, batch size, dtype, device) and one family: ``dp`` (``sgd``, every
private step and the peers: each private step's ratio to ``sgd``, each peer's to our best private step) or
``grad`` (the batched reference and the per-sample methods: each method's ratio to the reference and to its
floor). The floor is not a timed target: per round it is the reference's round time plus the time to write the
B x P per-sample output once at the bandwidth measured for the run (``compare.benchmark.floor``), so
``ratio_to_floor`` is a paired ratio to the reference with that derived constant added.

The sweep measures every point first in its own process (``compare.benchmark.point``: compile time, peak memory,
an unpaired median), then each pair group here: ``python -m compare.benchmark.pair --specs JSON-LIST --result
PATH`` compiles and warms every member, then runs the interleaved rounds; ``run_pair`` is the parent side and
``attach`` writes the rounds, the ratios with their intervals and verdicts, and any warning into the records.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from compare.benchmark.paired import Ratio, calls_per_slot, goal_entry, interleave, paired_ratio, warnings_for
from compare.benchmark.point import PointSpec, start_up
from contract.peers import names as peer_names

FAMILY = {"dp": "dp", "reference": "grad", "per_sample": "grad"}
BASELINE = {"dp": "sgd", "grad": "batched"}


def peer_methods() -> frozenset[str]:
    """The peers' dp steps (``contract.peers``, read at call time: a peer registered later counts)."""
    return frozenset(peer_names(kind="dp"))


def group_key(spec: PointSpec | dict) -> tuple | None:
    """The pair group of a point, or None (a kind with no baseline, e.g. the distributed kind)."""
    d = asdict(spec) if isinstance(spec, PointSpec) else spec
    family = FAMILY.get(d["kind"])
    if family is None:
        return None
    return d.get("model"), d["framework"], d["batch_size"], d["dtype"], d["device"], family


def pair_groups(specs: list[PointSpec]) -> list[list[PointSpec]]:
    """``specs`` (the ok points) by pair group, groups in first-seen order; only groups with their baseline and
    at least one other member."""
    groups: dict[tuple, list[PointSpec]] = {}
    for s in specs:
        key = group_key(s)
        if key is not None:
            groups.setdefault(key, []).append(s)
    return [g for key, g in groups.items()
            if len(g) > 1 and any(s.method == BASELINE[key[-1]] for s in g)]


def measure_group(specs: list[PointSpec], rounds: int, min_seconds: float, seed: int) -> dict:
    """In THIS process: build, compile and warm every member, then time them interleaved. A member that fails
    to build or run is reported with its error and left out of the rounds."""
    from compare.benchmark.targets import measure, prepare, sync_fn
    from compare.weights import load_weights

    t0 = time.perf_counter()
    start_up(specs[0].framework, specs[0].device)
    slots, calls, members = {}, {}, {}
    for s in specs:
        try:
            weights = load_weights(s.weights, model=s.model)
            fn, args = prepare(s.framework, s.kind, s.method, weights, s.batch_size, dtype=s.dtype, device=s.device,
                               loss=s.loss, chunk_size=s.chunk_size, seed=s.seed, model=s.model)
            sync = sync_fn(s.framework, s.device)
            warm = measure(fn, args, sync, min_repeats=1, min_seconds=0.0, warmup=max(s.warmup, 1))
        except Exception as err:  # noqa: BLE001 - a failing member is data; the others are still paired
            members[s.method] = {"error": f"{type(err).__name__}: {err}"[:500]}
            continue
        slots[s.method] = (lambda fn=fn, args=args, sync=sync: sync(fn(*args)))
        calls[s.method] = calls_per_slot(warm.min_ms)  # the min: a busy machine inflates the median
    if len(slots) > 1:
        res = interleave(slots, calls, rounds=rounds, min_seconds=min_seconds, seed=seed)
        for m in slots:
            members[m] = {"rounds_ms": res.rounds_ms[m], "calls_per_round": res.calls[m]}
        info = {"orders": res.orders, "loadavg_max": res.loadavg_max, "cores": res.cores}
    else:
        info = {"orders": [], "loadavg_max": os.getloadavg()[0], "cores": len(os.sched_getaffinity(0))}
    return {"members": members, **info, "seed": seed, "wall_s": time.perf_counter() - t0}


def run_pair(specs: list[PointSpec], *, env: dict[str, str], timeout: float, rounds: int, min_seconds: float,
             seed: int = 0) -> dict:
    """``measure_group`` in a fresh process; ``{"error": reason}`` when it gives no result."""
    with tempfile.TemporaryDirectory(prefix="pair-") as tmp:
        result = Path(tmp) / "pair.json"
        cmd = [sys.executable, "-m", "compare.benchmark.pair", "--result", str(result), "--rounds", str(rounds),
               "--min-seconds", repr(min_seconds), "--seed", str(seed),
               "--specs", json.dumps([asdict(s) for s in specs])]
        try:
            proc = subprocess.run(cmd, env=env, timeout=timeout, capture_output=True, text=True)
        except subprocess.TimeoutExpired:
            return {"error": f"no paired result within {timeout:g} s (process killed)"}
        if result.is_file():
            return json.loads(result.read_text())
        tail = "\n".join(proc.stderr.strip().splitlines()[-3:])
        return {"error": f"pair process exit code {proc.returncode}: {tail}"[:1000]}


def _summary(ms: list[float]) -> dict:
    a = np.asarray(ms)
    q75, q25 = np.percentile(a, [75, 25])
    return {"median_ms": float(np.median(a)), "iqr_ms": float(q75 - q25), "min_ms": float(a.min())}


def attach(records: dict[str, dict], result: dict, group_id: str, floor_write_ms: float | None = None) -> None:
    """Write a pair group's ``result`` into its ``records`` ({method: record}): each member's rounds and
    round statistics (the unpaired median kept as ``unpaired_median_ms``), ``ratios`` {baseline: entry} with
    the goal verdicts, ``warnings``, and ``pair`` (the group). ``floor_write_ms``: the floor's write time at
    this batch size (grad family), None without a measured bandwidth."""
    members = result.get("members", {})
    timed = {m: v["rounds_ms"] for m, v in members.items() if "rounds_ms" in v}
    pair = {"id": group_id, "members": sorted(records), "rounds": len(next(iter(timed.values()), [])),
            "calls_per_round": {m: v.get("calls_per_round") for m, v in members.items() if "rounds_ms" in v},
            "loadavg_max": result.get("loadavg_max"), "cores": result.get("cores"), "wall_s": result.get("wall_s"),
            "error": result.get("error") or {m: v["error"] for m, v in members.items() if "error" in v} or None}
    family = "dp" if "sgd" in records else "grad"
    own_best = _own_best(timed) if family == "dp" else None
    for method, rec in records.items():
        rec["pair"] = pair
        if method not in timed:
            rec["warnings"] = [f"not paired: {pair['error']}"]
            continue
        rec["unpaired_median_ms"] = rec.get("median_ms")
        rec.update(_summary(timed[method]), rounds_ms=timed[method], repeats=len(timed[method]))
        ratios: dict[str, Ratio] = {}
        entries: dict[str, dict] = {}
        base = BASELINE[family]
        if method != base and base in timed:
            goal = ("private_over_sgd" if method not in peer_methods() else None) if family == "dp" else None
            ratios[base] = paired_ratio(timed[method], timed[base])
            entries[base] = goal_entry(ratios[base], goal)
        if family == "grad" and method != base and base in timed and floor_write_ms is not None:
            ratios["floor"] = paired_ratio(timed[method], timed[base], den_offset_ms=floor_write_ms)
            entries["floor"] = {**goal_entry(ratios["floor"], "per_sample_over_floor"),
                                "derived": f"reference round + {floor_write_ms:.3f} ms write at the measured "
                                           "bandwidth (not timed)"}
            rec["ratio_to_floor"] = ratios["floor"].median
        if method in peer_methods() and own_best is not None:
            ratios[own_best] = paired_ratio(timed[method], timed[own_best])
            entries[own_best] = {**goal_entry(ratios[own_best], "peer_over_ours"), "ours": own_best}
        rec["ratios"] = entries
        rec["warnings"] = warnings_for(ratios, pair["loadavg_max"], pair["cores"])


def _own_best(timed: dict[str, list[float]]) -> str | None:
    own = [m for m in timed if m not in peer_methods() and m != "sgd"]
    return min(own, key=lambda m: float(np.median(timed[m]))) if own else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m compare.benchmark.pair", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--specs", required=True, help="JSON list of PointSpec dicts, one pair group")
    p.add_argument("--result", type=Path, required=True)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--min-seconds", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    specs = [PointSpec(**d) for d in json.loads(a.specs)]
    if len({s.framework for s in specs}) != 1:
        p.error("a pair group is one framework's points")
    out = measure_group(specs, a.rounds, a.min_seconds, a.seed)
    tmp = a.result.with_name(a.result.name + ".tmp")
    tmp.write_text(json.dumps(out))
    os.replace(tmp, a.result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
