"""The agreement stage of ``compare.run``: one report per workload, saved as soon as it is made.

Each workload's report goes to ``DIR/agreement/<model>.json`` (with the settings it was made with and its
printed table) the moment it is complete, so an interrupted run keeps the workloads it finished; ``--resume``
reuses every saved report whose settings (loss, batch size, batch seed, device, the weights' contents) match
this run's and runs the others. ``results.json`` gets the report(s) as before: one workload's report as is,
several as ``{"ok": all ok, "by_model": {model: report}}``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from compare.spec import DEFAULT_MODEL, make_batch

if TYPE_CHECKING:
    from compare.benchmark.config import Config

log = logging.getLogger("compare.run")

AGREEMENT_DIR = "agreement"


def weights_digest(weights: dict[str, np.ndarray]) -> str:
    """sha256 over the canonical weights (names, shapes, bytes): a saved report is of these weights only."""
    h = hashlib.sha256()
    for key in sorted(weights):
        arr = np.ascontiguousarray(weights[key])
        h.update(f"{key}{arr.shape}{arr.dtype}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def settings(cfg: Config, model: str, weights: dict[str, np.ndarray], device: str) -> dict:
    """What a workload's report depends on: a saved report with other settings is not reused."""
    return {"model": model, "loss": cfg.loss, "batch_size": cfg.agreement_batch_size, "seed": cfg.seed,
            "device": device, "weights_sha256": weights_digest(weights)}


def saved_path(out: Path, model: str) -> Path:
    return Path(out) / AGREEMENT_DIR / f"{model}.json"


def load_saved(out: Path, model: str, want: dict) -> dict | None:
    """The saved {settings, report, table} of ``model`` when its settings are ``want``; else None."""
    path = saved_path(out, model)
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return saved if isinstance(saved, dict) and saved.get("settings") == want and "report" in saved else None


def save(out: Path, model: str, want: dict, report: dict, table: str) -> Path:
    path = saved_path(out, model)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"settings": want, "report": report, "table": table}, indent=1))
    os.replace(tmp, path)
    return path


def reusable(cfg: Config, weights: dict[str, dict], device: str) -> list[str]:
    """The workloads whose saved report ``--resume`` reuses (none without ``--resume``)."""
    if not cfg.resume or not cfg.agreement or cfg.agreement_file is not None:
        return []
    return [m for m, w in weights.items() if load_saved(cfg.out, m, settings(cfg, m, w, device)) is not None]


def read_agreement_file(path: Path) -> dict:
    """An ``agreement.json`` of ``--agreement-only``; ``ValueError`` naming the file when it is not one."""
    try:
        report = json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"--agreement-file {path}: not a JSON file ({err.msg} at line {err.lineno}); "
                         "was it cut off? Write it again with --agreement-only") from None
    except UnicodeDecodeError:
        raise ValueError(f"--agreement-file {path}: not a JSON text file") from None
    if not isinstance(report, dict) or "ok" not in report:
        raise ValueError(f"--agreement-file {path}: not an agreement report (no 'ok'); "
                         "it is written by compare.run --agreement-only")
    return report


def run_agreement_check(cfg: Config, weights: dict[str, dict], device: str) -> tuple[dict | None, bool]:
    """The agreement report of every workload of the run (``weights``: {model: its weights}), each saved in
    ``DIR/agreement/`` as it completes; with ``--resume`` a saved report of the same settings is reused."""
    if cfg.agreement_file is not None:
        report = read_agreement_file(cfg.agreement_file)
        log.info("agreement report from %s (ok=%s)", cfg.agreement_file, report.get("ok"))
        return report, bool(report.get("ok"))
    if not cfg.agreement:
        log.info("agreement check skipped (--no-agreement)")
        return None, True
    reports = {}
    for model, w in weights.items():
        want = settings(cfg, model, w, device)
        saved = load_saved(cfg.out, model, want) if cfg.resume else None
        if saved is not None:
            log.info("%s: agreement reused from %s", model, saved_path(cfg.out, model))
            print(saved.get("table", ""))
            reports[model] = saved["report"]
        else:
            reports[model] = _check_one(cfg, model, w, device, want)
        if not reports[model]["ok"]:
            log.error("%s: per-sample gradients DISAGREE beyond tolerance (see the table above)", model)
    ok = all(r["ok"] for r in reports.values())
    if len(reports) == 1:
        return next(iter(reports.values())), ok
    return {"ok": ok, "by_model": reports}, ok


def _check_one(cfg: Config, model: str, w: dict, device: str, want: dict) -> dict:
    from compare.agreement import run_agreement

    x, y = make_batch(cfg.agreement_batch_size, cfg.seed, model=model)
    kwargs = {} if model == DEFAULT_MODEL else {"model": model}  # the seed call stays today's call
    report = run_agreement(w, x, y, loss=cfg.loss, device=device, **kwargs)
    table = report.format_table()
    print(table)
    result = {**report.to_json(), "model": model}
    save(cfg.out, model, want, result, table)
    return result


def agreement_only(cfg: Config, weights: dict[str, dict], device: str, argv: list[str] | None = None) -> int:
    """``--agreement-only``: the check (float32 and float64) of every workload, written to DIR/agreement.json
    with its ``meta`` (``compare.provenance``: command, commit, versions, CPU, date)."""
    from compare.provenance import command_line, provenance

    agreement, ok = run_agreement_check(dataclasses.replace(cfg, agreement=True), weights, device)
    cfg.out.mkdir(parents=True, exist_ok=True)
    path = cfg.out / "agreement.json"
    meta = provenance(command_line(argv, "python -m compare.run"))
    path.write_text(json.dumps({**agreement, "device": device, "meta": meta}, indent=1))
    log.info("wrote %s (ok=%s)", path, ok)
    return 0 if ok else 1
