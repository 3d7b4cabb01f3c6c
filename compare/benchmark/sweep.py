"""The sweep behind ``compare.run``: plan the points, run each in its own process, keep every finished one.

Order: batch sizes ascending, so that once a (framework, kind, method) runs out of memory or time at some B,
its larger batches are recorded as ``skipped`` instead of being tried. Without grouping (CPU default) the plan
runs batch size by batch size, one fresh process per point; grouped (``--group-points method``, GPU default) it
runs method by method, one process per (framework, kind, method) with its batch sizes ascending (see
``compare.benchmark.point``). Methods this installation lacks (``MISSING`` of each per_sample module, e.g.
Opacus' on a machine without opacus) are planned and recorded as skipped with the reason, never dropped
silently; ``CUDA_METHODS`` (torch's ``compile_cudagraphs``) are planned on cuda only. Several workloads
(``--model``) are planned one after the other, each with its own weights file; a method that cannot apply to a
workload (``compare.benchmark.targets.not_applicable``) is recorded as ``not_applicable`` with the reason. With ``--budget`` the
points not started within it are recorded as skipped. A point whose per-sample gradients alone
(a per-sample method, or the DP-SGD step) do not fit in available host memory is skipped up front. Each record
gets its kind's ``details`` (for ``dp``: the per-sample method inside the step and the DP settings). With
``--resume`` every point already in DIR/points.jsonl (whatever its status) is kept and not run again; the
environment must match. Without it, an earlier run's files are moved to DIR/runs/ (``compare.rundir``).
"""
from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from compare.benchmark.targets import TARGETS, not_applicable
from compare.benchmark.floor import add_floors, run_floor
from compare.benchmark.config import grouping_for
from compare.benchmark.floor import floor_ms
from compare.benchmark.pair import attach, group_key, pair_groups, run_pair
from compare.benchmark.point import GIVE_UP, PointSpec, run_group, run_point
from compare.benchmark.results import (
    append_point, failure_record, load_points, make_meta, point_key, relevant_env, write_results,
)
from compare.frameworks import side
from compare.spec import DEFAULT_MODEL, available_memory_bytes, check_model
from compare.benchmark.summary import format_summary
from compare.benchmark.run_state import ResumeError, check_resume_env
from compare.rundir import keep_earlier_run

if TYPE_CHECKING:
    from compare.benchmark.config import Config

log = logging.getLogger("compare.benchmark.sweep")

Runner = Callable[..., dict]
SLOW_LAST: tuple[str, ...] = ("loop", "vmap_nojit")  # grouped runs: these methods last within their kind


def _methods(framework: str, kind: str, device: str) -> tuple[str, ...]:
    """The kind's methods on ``device``, including those this installation lacks (recorded as skipped)."""
    methods = TARGETS[kind].methods(framework)
    if kind != "per_sample":
        return methods
    mod = side(framework)
    extra = tuple(mod.MISSING) + (tuple(mod.CUDA_METHODS) if device.startswith("cuda") else ())
    return methods + tuple(m for m in extra if m not in methods)


def missing_reason(framework: str, kind: str, method: str) -> str | None:
    """Why this installation cannot run the method (a missing library), else None."""
    if kind != "per_sample":
        return None
    return side(framework).MISSING.get(method)


def _selected(cfg: Config, kind: str, methods: tuple[str, ...]) -> tuple[str, ...]:
    """The methods of ``kind`` that ``--methods`` selects (see ``compare.benchmark.targets.Target.selection``)."""
    tgt = TARGETS[kind]
    if cfg.methods is None or tgt.selection == "always":
        return methods
    named = tuple(m for m in methods if m in cfg.methods)
    if named and tgt.baseline is not None and tgt.baseline not in named:
        named = (tgt.baseline, *named)  # a ratio needs its denominator
    return named


def plan_points(cfg: Config, weights_path: Path | dict[str, Path], device: str) -> list[PointSpec]:
    """Every point of the run, in order: workload by workload (``cfg.models``), each as below.

    ``weights_path``: the weights file, or {model: its weights file} for several workloads.
    With ``--methods``, the reference always runs, per-sample methods run when named, and a dp method runs when
    named, with ``sgd`` (the denominator of every DP overhead) whenever any dp method is.
    """
    paths = weights_path if isinstance(weights_path, dict) else {m: weights_path for m in cfg.models}
    plan: list[PointSpec] = []
    for model in cfg.models:
        plan += _plan_model(cfg, paths[model], device, model)
    return plan


def _plan_model(cfg: Config, weights_path: Path, device: str, model: str) -> list[PointSpec]:
    per_fw = {fw: {kind: _methods(fw, kind, device) for kind in TARGETS} for fw in cfg.frameworks}
    known = {m for kinds in per_fw.values() for ms in kinds.values() for m in ms}
    if cfg.methods is not None:
        unknown = sorted(set(cfg.methods) - known)
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; the frameworks {cfg.frameworks} have {sorted(known)}")
    plan = []
    sizes = cfg.batch_sizes_of(model, device)
    if sizes != cfg.batch_sizes:
        log.info("%s on %s: batch sizes %s only (the suite's cpu_batch_sizes)", model, device,
                 ",".join(map(str, sizes)))
    for bsz in sorted(sizes):
        for fw in cfg.frameworks:
            for kind, methods in per_fw[fw].items():
                for m in _selected(cfg, kind, methods):
                    # a paired kind's own process only probes (compile, memory, an unpaired median): its
                    # time comes from the pair group's rounds (compare.benchmark.pair)
                    probe = group_key({"kind": kind, "framework": fw, "batch_size": bsz, "dtype": cfg.dtype,
                                       "device": device, "model": model}) is not None
                    plan.append(PointSpec(framework=fw, kind=kind, method=m, batch_size=bsz, dtype=cfg.dtype,
                                          device=device, loss=cfg.loss, weights=str(weights_path), seed=cfg.seed,
                                          min_repeats=cfg.repeats, min_seconds=0.0 if probe else cfg.min_seconds,
                                          model=model))
    if grouping_for(cfg.group_points, device) == "method":  # one process per (framework, kind, method)
        # kinds in TARGETS order, each method beside the other framework's method of the same rank, so that a
        # --budget cut leaves both frameworks alike; the one-launch-per-example methods (SLOW_LAST) go last in
        # their kind: on a GPU they are the slowest and the least informative
        kinds = list(TARGETS)
        rank = {(fw, kind, m): (kinds.index(kind), m in SLOW_LAST, i, cfg.frameworks.index(fw))
                for fw, ks in per_fw.items() for kind, ms in ks.items() for i, m in enumerate(ms)}
        plan.sort(key=lambda s: (rank[(s.framework, s.kind, s.method)], s.batch_size))
    dropped = sorted(k for k in TARGETS if not any(s.kind == k for s in plan)
                     and any(per_fw[fw][k] for fw in per_fw))  # a kind with methods here, none of them named
    if dropped and cfg.methods is not None:
        log.info("--methods %s plans no point of kind(s) %s", ",".join(cfg.methods or ()), ", ".join(dropped))
    return plan


def _groups(specs: list[PointSpec], grouped: bool) -> list[list[PointSpec]]:
    """Consecutive specs of one (framework, kind, method) when grouped; else one spec per group."""
    if not grouped:
        return [[s] for s in specs]
    out: list[list[PointSpec]] = []
    for s in specs:
        if out and _method_key(out[-1][0]) == _method_key(s):
            out[-1].append(s)
        else:
            out.append([s])
    return out


def startup_summary(timings: list[dict]) -> dict:
    """Per framework: processes started, median start-up seconds (interpreter + imports + device init), total."""
    out = {}
    for fw in sorted({r["framework"] for r in timings}):
        fresh = [r["startup"]["total_s"] for r in timings if r["framework"] == fw and r.get("startup")
                 and r.get("index_in_process") == 0 and r["startup"].get("total_s") is not None]
        if fresh:
            out[fw] = {"processes": len(fresh), "median_s": float(np.median(fresh)), "total_s": float(sum(fresh))}
    return out


def _method_key(spec_or_record: PointSpec | dict) -> tuple[str, str, str, str]:
    """(model, framework, kind, method): what gives up together after an oom / timeout."""
    d = spec_or_record if isinstance(spec_or_record, dict) else asdict(spec_or_record)
    return d.get("model") or DEFAULT_MODEL, d["framework"], d["kind"], d["method"]


def _skip_reason(spec: PointSpec, gave_up: dict[tuple, tuple[int, str]]) -> str | None:
    missing = missing_reason(spec.framework, spec.kind, spec.method)
    if missing is not None:
        return missing
    prev = gave_up.get(_method_key(spec))
    if prev is not None:
        return f"not tried: B={prev[0]} already ended in {prev[1]}"
    need = spec.batch_size * check_model(spec.model).num_params * np.dtype(spec.dtype).itemsize
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
        try:
            check_resume_env(out, env)
        except ResumeError as err:
            raise SystemExit(str(err)) from None
        records = load_points(points)
        log.info("resuming: %d point(s) already in %s", len(records), points)
    else:
        if points.exists() or (out / "results.json").exists():  # an earlier run: moved to runs/, not overwritten
            keep_earlier_run(out, "sweep", hint="; add --resume to continue a run instead")
        records = []
    out.mkdir(parents=True, exist_ok=True)
    sweep_file.write_text(json.dumps(env_now, indent=1))
    return records


def run_sweep(cfg: Config, plan: list[PointSpec], *, env: dict[str, str], device: str, agreement: dict | None,
              argv: list[str], config: dict, runner: Runner | None = None, pair_runner: Runner | None = None) -> Path:
    """Run ``plan`` (skipping recorded points), then write DIR/results.json and print the summary.

    ``runner(spec, env=, timeout=) -> record`` defaults to ``run_point`` (one subprocess per point);
    ``pair_runner(specs, env=, timeout=, rounds=, min_seconds=, seed=) -> result`` to ``run_pair``.
    """
    runner = runner or run_point

    out = Path(cfg.out)
    records = _open_points(out, env, cfg.resume)
    done = {point_key(r) for r in records}
    gave_up = {_method_key(r): (r["batch_size"], r["status"]) for r in records if r["status"] in GIVE_UP}
    floor = run_floor(env=env, device=device)
    if floor is not None:
        log.info("best write bandwidth %.1f GB/s (%s)", floor["bytes_per_s"] / 1e9, floor["best_kernel"])
    todo = [s for s in plan if s.key() not in done]
    grouped = grouping_for(cfg.group_points, device) == "method"
    started = time.perf_counter()

    def over_budget() -> bool:
        return cfg.budget is not None and time.perf_counter() - started > cfg.budget

    with logging_redirect_tqdm(), tqdm(total=len(plan), initial=len(plan) - len(todo), unit="pt",
                                       dynamic_ncols=True) as bar:
        def keep(spec: PointSpec, record: dict) -> None:
            record.update(TARGETS[spec.kind].details(spec.framework, spec.method))
            append_point(out / "points.jsonl", record)
            records.append(record)
            if record["status"] in GIVE_UP:
                gave_up[_method_key(spec)] = (spec.batch_size, record["status"])
            if record["status"] not in ("ok", "not_applicable"):
                log.warning("%s: %s (%s)", spec.label(), record["status"], record["reason"])
            bar.update(1)

        for group in _groups(todo, grouped):
            runnable = []
            for spec in group:
                na = not_applicable(spec.framework, spec.kind, spec.method, spec.model)
                if na is not None:
                    keep(spec, failure_record(asdict(spec), "not_applicable", na))
                    continue
                reason = (f"not started: the run's budget of {cfg.budget:g} s was spent" if over_budget()
                          else _skip_reason(spec, gave_up))
                if reason is not None:
                    keep(spec, failure_record(asdict(spec), "skipped", reason))
                else:
                    runnable.append(spec)
            if not runnable:
                continue
            if not grouped:
                bar.set_description(runnable[0].label())
                keep(runnable[0], runner(runnable[0], env=env, timeout=cfg.timeout))
                continue
            bar.set_description(f"{runnable[0].label()} .. B={runnable[-1].batch_size}")
            measured = 0
            with contextlib.closing(run_group(runnable, env=env, timeout=cfg.timeout)) as results:
                for record in results:  # closed on any exit (an interrupt too): kills the group's process
                    keep(runnable[measured], record)
                    measured += 1
                    if over_budget():
                        break
            for spec in runnable[measured:]:  # after an oom/timeout, or when the budget ran out
                reason = _skip_reason(spec, gave_up) or f"not started: the run's budget of {cfg.budget:g} s was spent"
                keep(spec, failure_record(asdict(spec), "skipped", reason))
    _run_pairs(cfg, plan, records, out, env, floor and floor["bytes_per_s"], pair_runner or run_pair)
    planned = {s.key() for s in plan}
    timings = add_floors([r for r in records if point_key(r) in planned], floor and floor["bytes_per_s"])
    meta = make_meta(argv=argv, device=device, env=env, config=config)
    meta["grouping"] = grouping_for(cfg.group_points, device)
    meta["sweep_s"] = time.perf_counter() - started
    meta["startup_s"] = startup_summary(timings)
    meta["threads"] = {fw: next((r["threads"] for r in timings if r["framework"] == fw and r.get("threads")), None)
                       for fw in cfg.frameworks}
    meta["paired"] = {"rounds": cfg.rounds, "min_seconds": cfg.min_seconds, "bootstrap": "percentile, 2000 "
                      "resamples of the rounds, seed 0", "protocol": "compare.benchmark.paired"}
    path = write_results(out / "results.json", meta=meta, agreement=agreement, floor=floor, timings=timings)
    print(format_summary(timings, floor and floor["bytes_per_s"], rounds=cfg.rounds))
    log.info("wrote %s (%d points)", path, len(timings))
    return path


def _run_pairs(cfg: Config, plan: list[PointSpec], records: list[dict], out: Path, env: dict[str, str],
               bytes_per_s: float | None, pair_runner: Runner) -> None:
    """Time every pair group of the ok points (``compare.benchmark.pair``), one child process each, and write its
    rounds, ratios and warnings into the records. Each group's raw result is appended to DIR/pairs.jsonl as soon
    as it exists; with --resume a group already there (same members) is not timed again."""
    pairs_file = out / "pairs.jsonl"
    stored = {}
    if cfg.resume and pairs_file.is_file():
        for line in pairs_file.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # cut off by a kill
                continue
            stored[entry["id"]] = entry
    elif pairs_file.exists():
        pairs_file.replace(pairs_file.with_name("pairs.jsonl.prev"))
    specs = {s.key(): s for s in plan}
    by_key = {point_key(r): r for r in records}
    ok = [specs[k] for k, r in by_key.items() if k in specs and r["status"] == "ok"]
    groups = pair_groups(ok)
    for group in tqdm(groups, unit="pair", dynamic_ncols=True, desc="paired rounds"):
        s0 = group[0]
        family = group_key(s0)[-1]
        gid = f"{s0.model}/{s0.framework}/B={s0.batch_size}/{s0.dtype}/{s0.device}/{family}"
        members = sorted(s.method for s in group)
        entry = stored.get(gid)
        if entry is None or entry["members"] != members:
            result = pair_runner(group, env=env, timeout=cfg.timeout, rounds=cfg.rounds,
                                 min_seconds=cfg.min_seconds, seed=cfg.seed)
            entry = {"id": gid, "members": members, "result": result}
            with open(pairs_file, "a") as fh:
                fh.write(json.dumps(entry) + "\n")
            if result.get("error") or any("error" in m for m in result.get("members", {}).values()):
                log.warning("pair group %s: %s", gid, result.get("error") or "a member failed (see its warnings)")
        write_ms = None
        if bytes_per_s and family == "grad":
            write_ms = floor_ms(0.0, s0.batch_size, np.dtype(s0.dtype).itemsize, bytes_per_s,
                                check_model(s0.model).num_params)
        attach({s.method: by_key[s.key()] for s in group}, entry["result"], group_id=gid, floor_write_ms=write_ms)
