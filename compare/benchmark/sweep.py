"""The sweep behind ``compare.run``: plan the points, run each in its own process, keep every finished one.

Order: batch sizes ascending, so that once a (framework, kind, method) runs out of memory or time at some B,
its larger batches are recorded as ``skipped`` instead of being tried. A point whose per-sample gradients alone
(a per-sample method, or the DP-SGD step) do not fit in available host memory is skipped up front. Each record
gets its kind's ``details`` (for ``dp``: the per-sample method inside the step and the DP settings). With
``--resume`` every point already in DIR/points.jsonl (whatever its status) is kept and not run again; the
environment must match.
"""
from __future__ import annotations

import json
from dataclasses import asdict
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from compare.benchmark.targets import TARGETS
from compare.benchmark.floor import add_floors, run_floor
from compare.benchmark.point import PointSpec, run_point
from compare.benchmark.results import (
    append_point, failure_record, load_points, make_meta, point_key, relevant_env, write_results,
)
from compare.spec import NUM_PARAMS, available_memory_bytes
from compare.benchmark.summary import format_summary

if TYPE_CHECKING:
    from compare.benchmark.config import Config

log = logging.getLogger("compare.benchmark.sweep")

Runner = Callable[..., dict]
GIVE_UP = ("oom", "timeout")  # statuses after which larger batches of the same method are not tried


def _selected(cfg: Config, kind: str, methods: tuple[str, ...]) -> tuple[str, ...]:
    """The methods of ``kind`` that ``--methods`` selects (see ``compare.benchmark.targets.Target.selection``)."""
    tgt = TARGETS[kind]
    if cfg.methods is None or tgt.selection == "always":
        return methods
    named = tuple(m for m in methods if m in cfg.methods)
    if named and tgt.baseline is not None and tgt.baseline not in named:
        named = (tgt.baseline, *named)  # a ratio needs its denominator
    return named


def plan_points(cfg: Config, weights_path: Path, device: str) -> list[PointSpec]:
    """Every point of the run, in order.

    With ``--methods``, the reference always runs, per-sample methods run when named, and a dp method runs when
    named, with ``sgd`` (the denominator of every DP overhead) whenever any dp method is.
    """
    per_fw = {fw: {kind: TARGETS[kind].methods(fw) for kind in TARGETS} for fw in cfg.frameworks}
    known = {m for kinds in per_fw.values() for ms in kinds.values() for m in ms}
    if cfg.methods is not None:
        unknown = sorted(set(cfg.methods) - known)
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; the frameworks {cfg.frameworks} have {sorted(known)}")
    plan = []
    for bsz in sorted(cfg.batch_sizes):
        for fw in cfg.frameworks:
            for kind, methods in per_fw[fw].items():
                for m in _selected(cfg, kind, methods):
                    plan.append(PointSpec(framework=fw, kind=kind, method=m, batch_size=bsz, dtype=cfg.dtype,
                                          device=device, loss=cfg.loss, weights=str(weights_path), seed=cfg.seed,
                                          min_repeats=cfg.repeats, min_seconds=cfg.min_seconds))
    dropped = sorted(k for k in TARGETS if not any(s.kind == k for s in plan))
    if dropped:
        log.info("--methods %s plans no point of kind(s) %s", ",".join(cfg.methods or ()), ", ".join(dropped))
    return plan


def _skip_reason(spec: PointSpec, gave_up: dict[tuple, tuple[int, str]]) -> str | None:
    prev = gave_up.get((spec.framework, spec.kind, spec.method))
    if prev is not None:
        return f"not tried: B={prev[0]} already ended in {prev[1]}"
    need = spec.batch_size * NUM_PARAMS * np.dtype(spec.dtype).itemsize
    avail = available_memory_bytes()
    holds = TARGETS[spec.kind].holds_per_sample(spec.method)
    if holds and spec.device == "cpu" and avail is not None and need > avail:
        return (f"does not fit: the per-sample gradients alone need {need / 2**30:.1f} GiB, "
                f"{avail / 2**30:.1f} GiB available")
    return None


def _open_points(out: Path, env: dict[str, str], resume: bool) -> list[dict]:
    """Existing records when resuming (same environment required); otherwise a fresh points.jsonl."""
    points, sweep_file = out / "points.jsonl", out / "sweep_env.json"
    env_now = relevant_env(env)
    if resume:
        if sweep_file.is_file() and json.loads(sweep_file.read_text()) != env_now:
            raise SystemExit(f"cannot --resume in {out}: the environment differs from the recorded one "
                             f"({sweep_file}); use another --out or run without --resume")
        records = load_points(points)
        log.info("resuming: %d point(s) already in %s", len(records), points)
    else:
        if points.exists():
            points.replace(points.with_name("points.jsonl.prev"))
            log.info("moved the previous %s to points.jsonl.prev (use --resume to continue it)", points)
        records = []
    out.mkdir(parents=True, exist_ok=True)
    sweep_file.write_text(json.dumps(env_now, indent=1))
    return records


def run_sweep(cfg: Config, plan: list[PointSpec], *, env: dict[str, str], device: str, agreement: dict | None,
              argv: list[str], config: dict, runner: Runner | None = None) -> Path:
    """Run ``plan`` (skipping recorded points), then write DIR/results.json and print the summary.

    ``runner(spec, env=, timeout=) -> record`` defaults to ``run_point`` (one subprocess per point).
    """
    runner = runner or run_point

    out = Path(cfg.out)
    records = _open_points(out, env, cfg.resume)
    done = {point_key(r) for r in records}
    gave_up = {(r["framework"], r["kind"], r["method"]): (r["batch_size"], r["status"])
               for r in records if r["status"] in GIVE_UP}
    floor = run_floor(env=env, device=device)
    if floor is not None:
        log.info("best write bandwidth %.1f GB/s (%s)", floor["bytes_per_s"] / 1e9, floor["best_kernel"])
    todo = [s for s in plan if s.key() not in done]
    with logging_redirect_tqdm(), tqdm(total=len(plan), initial=len(plan) - len(todo), unit="pt",
                                       dynamic_ncols=True) as bar:
        for spec in todo:
            bar.set_description(spec.label())
            reason = _skip_reason(spec, gave_up)
            if reason is not None:
                record = failure_record(asdict(spec), "skipped", reason)
            else:
                record = runner(spec, env=env, timeout=cfg.timeout)
            record.update(TARGETS[spec.kind].details(spec.framework, spec.method))
            append_point(out / "points.jsonl", record)
            records.append(record)
            if record["status"] in GIVE_UP:
                gave_up[(spec.framework, spec.kind, spec.method)] = (spec.batch_size, record["status"])
            if record["status"] != "ok":
                log.warning("%s: %s (%s)", spec.label(), record["status"], record["reason"])
            bar.update(1)
    planned = {s.key() for s in plan}
    timings = add_floors([r for r in records if point_key(r) in planned], floor and floor["bytes_per_s"])
    meta = make_meta(argv=argv, device=device, env=env, config=config)
    meta["threads"] = {fw: next((r["threads"] for r in timings if r["framework"] == fw and r.get("threads")), None)
                       for fw in cfg.frameworks}
    path = write_results(out / "results.json", meta=meta, agreement=agreement, floor=floor, timings=timings)
    print(format_summary(timings, floor and floor["bytes_per_s"]))
    log.info("wrote %s (%d points)", path, len(timings))
    return path
