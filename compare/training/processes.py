"""``compare.train --processes N``: N processes, each started the way its own host would start it, on this machine.

torch: one ``torchrun --nnodes N --nproc-per-node 1 --node-rank R`` per process, with a localhost rendezvous;
JAX: one ``python -m compare.train`` per process with JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
JAX_PROCESS_ID, joined by ``jax.distributed.initialize`` (each side's ``launch.process_command``). Each process
runs the same ``compare.train`` arguments for one framework and one workload; every process builds the same
global batch from the shared seed and takes its block (``<fw>_impl.distributed.shard_batch``), the noise is one
draw from the shared seed, and process 0 writes the progress lines and its result (``RESULT_ENV``), which this
launcher returns to the report. The accountant runs once, here, on the global batch: epsilon is the one-process
value.

Faults (``watch``): a process that exits non-zero ends the run with one ``ProcessError`` naming it (its exit code
or signal, its last step and its last error line): of the processes that exited within ``SETTLE_S``, the one
furthest behind (the others died of it in their next collective); the rest are ended ``grace_s`` later. Each process stamps a
heartbeat file before and after every step (``beat``); when no stamp has moved for ``timeout_s`` the run is stuck:
the process(es) behind the others are named as hung (the others wait in the all-reduce for them), or all of
them when none is behind, and every process is ended. A launcher killed outright (SIGKILL) takes its processes
along (``compare.training.child``). Output of process R: ``<out>/processes/<fw>-<R>.log``.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable, TextIO

from compare.frameworks import side
from compare.training.child import die_with_parent

HEARTBEAT_ENV = "COMPARE_HEARTBEAT_DIR"
RESULT_ENV = "COMPARE_RESULT"
PROGRESS_ENV = "COMPARE_PROGRESS"
WORKER_ENV = "COMPARE_WORKER"  # "<framework>:<model>": this process trains that pair only
DEFAULT_TIMEOUT_S = 300.0
SETTLE_S = 3.0  # after a death: torchrun notices its worker's exit within its monitor interval (0.5 s)  # no step stamp for this long: hung (compilation of the first step included)


class ProcessError(RuntimeError):
    """One process (or several) died or hung; the message names it."""


def beat(step: int, done: bool) -> None:
    """Stamp this process's heartbeat: 2 step + 1 before ``step``, 2 step + 2 after (no-op outside a launch)."""
    folder = os.environ.get(HEARTBEAT_ENV)
    if folder:
        rank = os.environ.get("RANK") or os.environ.get("JAX_PROCESS_ID", "0")
        path = Path(folder) / rank
        tmp = path.with_suffix(".tmp")
        tmp.write_text(str(2 * step + (2 if done else 1)))
        os.replace(tmp, path)


def _phase_text(phase: int | None) -> str:
    if not phase:
        return "before its first step"
    step, done = divmod(phase - 1, 2)
    return f"after step {step}" if done else f"in step {step}"


def _last_error(log: Path) -> str:
    """The process's own last exception line (not its launcher's), else torchrun's report of the worker's exit
    code, else its last line."""
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()] if log.exists() else []
    errors = [ln for ln in lines if re.match(r"^[\w.]+(Error|Exception|Interrupt)\b", ln) and "ChildFailedError" not in ln]
    codes = [f"worker {ln}" for ln in lines if re.match(r"^exitcode\s*:", ln)]
    return re.sub(r"\s+", " ", (errors or codes or lines or ["(no output)"])[-1])[:300]


def watch(procs: list[subprocess.Popen], heartbeats: Path, logs: list[Path], *, timeout_s: float,
          startup_s: float, grace_s: float = 5.0) -> None:
    """Wait for every process; raise ``ProcessError`` naming the one that died or hung (see the module doc)."""
    def phases() -> dict[int, int | None]:
        out = {}
        for r in range(len(procs)):
            try:
                out[r] = int((heartbeats / str(r)).read_text())
            except (FileNotFoundError, ValueError):
                out[r] = None
        return out

    last, moved = phases(), time.monotonic()
    failure = None
    while failure is None:
        time.sleep(0.1)
        codes = [p.poll() for p in procs]
        if all(c == 0 for c in codes):
            return
        dead = [r for r, c in enumerate(codes) if c not in (None, 0)]
        now = phases()
        if dead:  # the others fail in their next collective at once: let them exit, then name the one behind
            settle = time.monotonic() + SETTLE_S
            while time.monotonic() < settle and any(p.poll() is None for p in procs):
                time.sleep(0.1)
            codes, now = [p.poll() for p in procs], phases()
            dead = [r for r, c in enumerate(codes) if c not in (None, 0)]
            r = min(dead, key=lambda r: now[r] or 0)
            code = codes[r]
            how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            failure = f"process {r} {how} {_phase_text(now[r])}: {_last_error(logs[r])}"
        elif now != last:
            last, moved = now, time.monotonic()
        elif time.monotonic() - moved > (timeout_s if None not in now.values() else max(timeout_s, startup_s)):
            known = {r: p or 0 for r, p in now.items()}
            behind = [r for r, p in known.items() if p == min(known.values())]
            waited = time.monotonic() - moved
            if len(behind) < len(procs):
                failure = (f"process {', '.join(map(str, behind))} hung {_phase_text(now[behind[0]])}: no progress "
                           f"for {waited:.0f} s while the others wait for it in the all-reduce")
            else:
                failure = f"processes {', '.join(map(str, behind))} all stalled {_phase_text(now[0])} for {waited:.0f} s"
    deadline = time.monotonic() + grace_s
    for p in procs:
        if p.poll() is None:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)  # torchrun's worker too
            p.wait()
    raise ProcessError(f"{failure} (run ended; logs: {logs[0].parent})")


def run_processes(framework: str, model: str, processes: int, argv: list[str], out: Path, progress: Path | None, *,
                  timeout_s: float = DEFAULT_TIMEOUT_S, module: str = "compare.train") -> dict | None:
    """Train ``model`` in ``framework`` on ``processes`` processes started with ``python -m <module> <argv>``;
    process 0's result (``compare.train``'s per-framework report entry)."""
    distributed = side(framework).distributed
    address = f"127.0.0.1:{distributed.free_port()}"
    logdir = out / "processes"
    logdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="compare-processes-") as tmp:
        result = Path(tmp) / "result.json"
        heartbeats = Path(tmp) / "heartbeats"
        heartbeats.mkdir()
        procs, logs = [], []
        for r in range(processes):
            cmd, extra = distributed.process_command(r, processes, address, [module, *argv])
            assert cmd[1] == "-m", cmd  # python -m X ... -> python -m compare.training.child X ...
            cmd = [cmd[0], "-m", "compare.training.child", *cmd[2:]]
            env = {**os.environ, **extra, HEARTBEAT_ENV: str(heartbeats), RESULT_ENV: str(result),
                   WORKER_ENV: f"{framework}:{model}", PROGRESS_ENV: str(progress or "")}
            env.pop("XLA_FLAGS", None)  # one device per process
            logs.append(logdir / f"{framework}-{r}.log")
            with open(logs[-1], "w") as log:
                procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                              start_new_session=True))
        try:
            watch(procs, heartbeats, logs, timeout_s=timeout_s, startup_s=max(timeout_s, 120.0))
        finally:
            for p in procs:
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
        return json.loads(result.read_text()) if result.exists() else None


def worker(train: Callable[[TextIO | None], object]) -> int:
    """Run ``train(progress file or None)`` as one process of a launch; exit at once on an error (0 or 1).

    An exception ends the process with ``os._exit(1)`` after printing it: a normal exit would wait in the
    runtime's shutdown barrier (jax.distributed) for the others, which wait for this one.
    """
    die_with_parent()  # torchrun's worker: ends with its agent, which ends with the launcher
    path = os.environ.get(PROGRESS_ENV)
    try:
        with open(path, "a") if path else contextlib.nullcontext() as progress:
            train(progress)
    except BaseException:  # noqa: BLE001 -- reported, then the process ends
        traceback.print_exc()
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(1)
    return 0


def write_result(result: dict | None) -> None:
    """Process 0 of a launch: hand this framework's report entry to the launcher (atomically)."""
    path = os.environ.get(RESULT_ENV)
    if path and result is not None:
        tmp = path + ".tmp"
        Path(tmp).write_text(json.dumps(result))
        os.replace(tmp, path)
