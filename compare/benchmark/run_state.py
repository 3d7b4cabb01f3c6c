"""What a ``compare.run`` finds in its directory, says at its start, and says when it is interrupted.

Without ``--resume`` an earlier run's files are moved to ``DIR/runs/<date>-<time>/`` (``compare.rundir``), never
overwritten. With ``--resume`` the recorded environment must match (else one line, before any work), and the
run says what it reuses (saved agreement reports, recorded points) and what it runs. Interrupted (Ctrl-C,
SIGTERM), it says in one line what was kept and the command that resumes.
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from compare.benchmark.agreement_stage import AGREEMENT_DIR, reusable
from compare.benchmark.results import load_points, point_key, relevant_env
from compare.rundir import keep_earlier_run

if TYPE_CHECKING:
    from compare.benchmark.config import Config
    from compare.benchmark.point import PointSpec

SWEEP_ENV = "sweep_env.json"


class ResumeError(ValueError):
    """``--resume`` cannot continue the run in this directory (one line)."""


def check_resume_env(out: Path, env: dict[str, str]) -> None:
    """The environment recorded by the run being resumed must be this one (compared by
    ``compare.env_vars.BEHAVIOUR_ENV`` names only, so files written before that list was explicit still match)."""
    path = Path(out) / SWEEP_ENV
    if not path.is_file():
        return
    try:
        recorded = relevant_env(json.loads(path.read_text()))
    except (OSError, ValueError) as err:
        raise ResumeError(f"cannot --resume in {out}: {path} is unreadable ({err}); use a fresh --out") from None
    now = relevant_env(env)
    if recorded != now:
        diff = sorted(k for k in set(recorded) | set(now) if recorded.get(k) != now.get(k))
        raise ResumeError(f"cannot --resume in {out}: the environment differs from the recorded one ({path}: "
                          f"{', '.join(diff)}); use a fresh --out, or run without --resume (the earlier run is "
                          "then kept in runs/)")


def prepare_out(cfg: Config, env: dict[str, str]) -> None:
    """Before any work: keep an earlier run (no ``--resume``), or check that it can be resumed."""
    if cfg.resume:
        check_resume_env(cfg.out, env)
        return
    kind = "agreement" if cfg.agreement_only else "sweep"
    keep = (cfg.agreement_file,) if cfg.agreement_file is not None else ()
    keep_earlier_run(cfg.out, kind, keep, hint="; add --resume to continue a run instead")


def start_lines(cfg: Config, plan: list[PointSpec], weights: dict[str, dict], device: str) -> list[str]:
    """What this run will reuse and what it will run, said before it starts."""
    if cfg.agreement_file is not None:
        agree = f"agreement: read from {cfg.agreement_file}"
    elif not cfg.agreement and not cfg.agreement_only:
        agree = "agreement: not checked (--no-agreement)"
    else:
        reuse = reusable(cfg, weights, device)
        todo = [m for m in weights if m not in reuse]
        agree = "agreement: " + "; ".join(
            part for part in (f"reusing the saved report of {', '.join(reuse)}" if reuse else "",
                              f"checking {', '.join(todo)}" if todo else "") if part)
    if cfg.agreement_only:
        return [agree]
    recorded = {point_key(r) for r in load_points(Path(cfg.out) / "points.jsonl")} if cfg.resume else set()
    kept = sum(1 for s in plan if s.key() in recorded)
    points = (f"points: {kept} of {len(plan)} already recorded (kept, not run again), {len(plan) - kept} to run"
              if cfg.resume else f"points: {len(plan)} to run")
    return [agree, points]


def _resume_command(argv: list[str]) -> str:
    args = list(argv) + ([] if "--resume" in argv else ["--resume"])
    return shlex.join(["python", "-m", "compare.run", *args])


def interrupted_line(cfg: Config, argv: list[str], signame: str) -> str:
    """One line: what the interrupted run kept on disk, and the command that resumes it."""
    out = Path(cfg.out)
    points = load_points(out / "points.jsonl") if (out / "points.jsonl").is_file() else []
    saved = sorted(p.stem for p in (out / AGREEMENT_DIR).glob("*.json")) if (out / AGREEMENT_DIR).is_dir() else []
    kept = []
    if saved:
        kept.append(f"the agreement of {', '.join(saved)} in {out / AGREEMENT_DIR}/")
    if points:
        kept.append(f"{len(points)} finished point(s) in {out / 'points.jsonl'}")
    what = " and ".join(kept) if kept else "nothing finished yet"
    return f"interrupted ({signame}): kept {what}; resume with: {_resume_command(argv)}"
