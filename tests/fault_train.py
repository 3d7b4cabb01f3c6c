"""``python -m fault_train FAULT RANK STEP <compare.train arguments>``: compare.train with one injected fault in
process RANK, for tests/test_processes.py and tests/test_resume.py: "die" (exit 3), "kill" (SIGKILL to itself) or
"hang" (sleep) just before step STEP, or "weights" (other initial weights in that process, refused before the first
step). Run as the launcher of ``--processes N``, it starts its processes through this module with the same fault."""
from __future__ import annotations

import os
import signal
import sys
import time

from compare.training import cli, processes


def main() -> int:
    fault, rank, at = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    me = int(os.environ.get("RANK") or os.environ.get("JAX_PROCESS_ID", "0"))
    if me == rank and fault in ("die", "kill", "hang"):
        beat = processes.beat

        def faulty(step: int, done: bool) -> None:
            if step == at and not done:
                if fault == "die":
                    os._exit(3)
                if fault == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                time.sleep(600)
            beat(step, done)

        processes.beat = faulty
    if me == rank and fault == "weights":
        init = cli.init_weights
        cli.init_weights = lambda seed, model: init(seed + 1, model)
    if not os.environ.get(processes.WORKER_ENV):  # the launcher: its processes get the fault too
        launch = processes.run_processes
        processes.run_processes = lambda *args, **kw: launch(*args[:3], [*sys.argv[1:4], *args[3]], *args[4:],
                                                             **{**kw, "module": "fault_train"})
    return cli.main(sys.argv[4:])


if __name__ == "__main__":
    sys.exit(main())
