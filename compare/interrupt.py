"""Clean interrupts: SIGTERM is handled like Ctrl-C (SIGINT), so one ``except KeyboardInterrupt`` covers both.

``interruptible()`` turns the first SIGTERM into ``Interrupted`` (a ``KeyboardInterrupt``), which unwinds the
``with`` blocks that own the measuring child processes (``subprocess.run`` kills its child on any exception;
``compare.benchmark.point.run_group`` kills its worker in ``finally``) and the temporary directories
(``/tmp/point-*``, ``/tmp/group-*``, ``/tmp/floor-*``). Later SIGINT/SIGTERM are ignored until the block
exits, so a second Ctrl-C cannot cut that clean-up short. The command line then prints one line (what was kept,
the command that resumes) and exits with 128 + the signal's number, as a shell does. ``kill_children()`` is the safety net for the
moments no ``with`` block owns a child (e.g. between ``fork`` and ``Popen`` returning): it kills and reaps
whatever child process is still there.
"""
from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from typing import Iterator


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_status(err: KeyboardInterrupt) -> int:
    """128 + the signal number (130 for Ctrl-C, 143 for SIGTERM)."""
    return 128 + getattr(err, "signum", signal.SIGINT)


def signal_name(err: KeyboardInterrupt) -> str:
    return signal.Signals(getattr(err, "signum", signal.SIGINT)).name


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """SIGINT and SIGTERM raise ``Interrupted`` once in the main thread; repeats are ignored until exit."""
    raised = False

    def handler(signum: int, frame: object) -> None:
        nonlocal raised
        if raised:
            return  # already unwinding: let the clean-up finish
        raised = True
        raise Interrupted(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def kill_children(marker: bytes = b"compare.benchmark.") -> list[int]:
    """SIGKILL and reap this process's children still running whose command line holds ``marker`` (the point
    and floor processes: ``python -m compare.benchmark.point`` ...; Linux ``/proc``); returns their ids."""
    pids: list[int] = []
    for task in Path("/proc/self/task").glob("*"):
        with contextlib.suppress(OSError, ValueError):
            pids += [int(p) for p in (task / "children").read_text().split()]
    pids = [p for p in pids if marker in _cmdline(p)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    return pids


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
