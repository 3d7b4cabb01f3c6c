"""``python -m compare.training.child MODULE ARG...``: run ``python -m MODULE ARG...`` in this process after
asking Linux to end it when its parent dies (``die_with_parent``).

``compare.train --processes`` starts each process through this (``processes.run_processes``), and its torchrun
worker calls ``die_with_parent`` itself (``processes.worker``): launcher -> torchrun agent -> worker, each ends
with the one above, so a launcher killed even by SIGKILL leaves no process training and writing checkpoints on
its own, which a ``--resume`` would race with. Set after exec rather than in a ``preexec_fn``: forking a
multithreaded process (JAX's) and running code before exec can deadlock.
"""
from __future__ import annotations

import ctypes
import runpy
import signal
import sys


def die_with_parent() -> None:
    """Linux: SIGKILL this process when its parent dies, even by SIGKILL (``PR_SET_PDEATHSIG``); elsewhere a
    no-op."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


if __name__ == "__main__":
    die_with_parent()
    module, sys.argv = sys.argv[1], sys.argv[1:]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
