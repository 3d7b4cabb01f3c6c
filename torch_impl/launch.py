"""Starting and joining torch's data-parallel processes, mirroring ``jax_impl.launch`` name for name.

torch is multi-controller: one process per replica, joined in a ``torch.distributed`` process group (NCCL on
GPUs, gloo on CPUs). ``init`` reads the environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT), so a process started by ``torchrun``, by ``launch`` (torch.multiprocessing, spawn) or by the
harness's process launcher (``process_command``: one ``torchrun --nnodes N --nproc-per-node 1`` per simulated
host) runs one code path.

Faults: the process group's ``timeout_s`` bounds every collective; a rank that dies makes the others' next
collective fail at once (gloo: connection closed), one that hangs makes it fail after ``timeout_s``; ``launch``
then reports every rank's outcome in one ``DistributedError`` and ends the stragglers.
"""
from __future__ import annotations

import ctypes
import datetime
import logging
import os
import queue
import signal
import socket
import sys
import time
import traceback
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from contract import devices as contract_devices

log = logging.getLogger("torch_impl.launch")

DEFAULT_TIMEOUT_S = 60.0


class DistributedError(RuntimeError):
    """A replica failed, died or timed out; the message lists every rank's outcome."""


def launched() -> bool:
    """True inside a process started by torchrun (or ``launch``): the environment names this rank."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init(*, backend: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> tuple[int, int]:
    """Join the process group described by the environment; ``(rank, world size)``. Idempotent.

    backend None: NCCL when CUDA is available (one GPU per local rank), else gloo.
    """
    if not dist.is_initialized():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", os.environ["RANK"])))
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return dist.get_rank(), dist.get_world_size()


def world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def check_devices(devices: int, device: str | None) -> int:
    """``devices`` if torch can run that many replicas on ``device``, else a DevicesError naming why."""
    return contract_devices.check_devices(devices, "torch", device, device_count(device))


def device_count(device: str | None) -> int:
    """Replicas torch can run on ``device`` (None: its GPUs when present, else the CPU cap)."""
    if device in ("cuda", "gpu") or (device is None and torch.cuda.is_available()):
        return torch.cuda.device_count()
    return contract_devices.cpu_max()


def process_command(process: int, processes: int, address: str, argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """``(command, extra environment)`` starting process ``process`` of ``processes`` as its own host would:
    ``torchrun --nnodes N --nproc-per-node 1 --node-rank R --master-addr A --master-port P -m <argv>``.

    ``address`` is ``HOST:PORT`` of the rendezvous (rank 0's host). torchrun then sets RANK, WORLD_SIZE,
    LOCAL_RANK, MASTER_ADDR and MASTER_PORT for the one worker it starts.
    """
    host, port = address.rsplit(":", 1)
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={processes}", "--nproc-per-node=1",
           f"--node-rank={process}", f"--master-addr={host}", f"--master-port={port}", "--max-restarts=0",
           "--monitor-interval=0.5", "-m", *argv]
    return cmd, {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // processes))}



def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """Linux: this spawned replica gets SIGKILL when the launching process dies (even by SIGKILL), so a killed
    ``compare.train`` leaves no replica training (and writing) on its own. Elsewhere a no-op."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


def _worker(rank_: int, devices: int, port: int, backend: str | None, timeout_s: float, threads: int | None,
            fn: Callable[..., Any], args: tuple, results: Any) -> None:
    _die_with_parent()
    os.environ.update(RANK=str(rank_), LOCAL_RANK=str(rank_), WORLD_SIZE=str(devices), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    if threads:
        torch.set_num_threads(threads)
    try:
        init(backend=backend, timeout_s=timeout_s)
        results.put((rank_, "ok", fn(*args)))
    except BaseException as err:  # reported to the parent, which raises for the whole group
        results.put((rank_, "error", f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=4)}"))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def launch(fn: Callable[..., Any], devices: int, *args: Any, backend: str | None = None,
           timeout_s: float = DEFAULT_TIMEOUT_S, device: str | None = None) -> list[Any]:
    """Run ``fn(*args)`` in ``devices`` processes joined in one group; every rank's return value, by rank.

    Under torchrun (``launched()``) the group exists already: ``fn`` runs in this process only and the list
    holds this rank's value. Otherwise ``devices`` processes are spawned (``fn``, ``args`` and results must
    pickle: return numpy or plain Python, not tensors). A rank that raises, dies or hangs ends the launch with
    a ``DistributedError`` within about ``timeout_s`` (the others fail in their next collective).
    On CPU each process gets cores / devices threads, so N processes do not oversubscribe the machine.
    """
    if launched():
        init(backend=backend, timeout_s=timeout_s)
        return [fn(*args)]
    check_devices(devices, device)
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    threads = None if torch.cuda.is_available() else max(1, (os.cpu_count() or 1) // devices)
    port = free_port()
    procs = [ctx.Process(target=_worker, args=(r, devices, port, backend, timeout_s, threads, fn, args, results),
                         daemon=True) for r in range(devices)]
    for p in procs:
        p.start()
    outcome: dict[int, tuple[str, Any]] = {}
    deadline = None
    try:
        while len(outcome) < devices:
            try:
                r, status, value = results.get(timeout=0.2)
                outcome[r] = (status, value)
            except queue.Empty:
                for r, p in enumerate(procs):
                    if r not in outcome and not p.is_alive() and p.exitcode is not None:
                        time.sleep(0.2)  # its last message may still be in the pipe
                        if r not in outcome and results.empty():
                            outcome[r] = ("error", f"process died with exit code {p.exitcode}")
            if deadline is None and any(s != "ok" for s, _ in outcome.values()):
                deadline = time.monotonic() + timeout_s + 2.0  # the others' collectives time out by then
            if deadline is not None and time.monotonic() > deadline:
                for r in range(devices):
                    outcome.setdefault(r, ("error", f"no result {timeout_s + 2:g} s after another rank failed (ended)"))
    finally:
        for r, p in enumerate(procs):  # ranks that reported are exiting; one still running after a failure is hung: end it
            p.join(timeout=5.0 if r in outcome and outcome[r][0] == "ok" else 0.5)
            if p.is_alive():
                p.kill()
                p.join()
    failed = {r: v for r, (s, v) in sorted(outcome.items()) if s != "ok"}
    if failed:
        lines = "\n".join(f"  rank {r}: {str(v).strip().splitlines()[0]}" for r, v in failed.items())
        log.debug("failed ranks:\n%s", "\n\n".join(f"rank {r}:\n{v}" for r, v in failed.items()))
        raise DistributedError(f"{len(failed)} of {devices} replicas failed:\n{lines}")
    return [outcome[r][1] for r in range(devices)]


# ---------------------------------------------------------------- timing a data-parallel call (compare.run --devices)


def _join_lockstep(rank_: int, devices: int, port: int, timeout_s: float, threads: int | None) -> None:
    """Join ``lockstep``'s localhost group as ``rank_`` (the environment torchrun would set), with ``threads``."""
    os.environ.update(RANK=str(rank_), LOCAL_RANK=str(rank_), WORLD_SIZE=str(devices), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    if threads:
        torch.set_num_threads(threads)
    init(timeout_s=timeout_s)


def _follow(rank_: int, devices: int, port: int, timeout_s: float, threads: int | None, build: Callable[..., Any],
            build_args: tuple) -> None:
    """Ranks 1..N-1 of ``lockstep``: build the same call, then run it each time rank 0 broadcasts 1; 0 ends."""
    _die_with_parent()
    _join_lockstep(rank_, devices, port, timeout_s, threads)
    fn, args = build(*build_args)
    flag = torch.zeros(1, device="cuda" if dist.get_backend() == "nccl" else "cpu")
    try:
        while True:
            dist.broadcast(flag, 0)
            if flag.item() == 0:
                break
            fn(*args)
    finally:
        dist.destroy_process_group()


def lockstep(build: Callable[..., tuple[Callable[..., Any], tuple]], devices: int, *build_args: Any,
             timeout_s: float = DEFAULT_TIMEOUT_S) -> tuple[Callable[[], Any], Callable[[], None]]:
    """``(call, close)``: this process is rank 0 of ``devices``; ``call()`` runs ``fn(*args)`` once on every rank.

    ``build(*build_args) -> (fn, args)`` runs on every rank after the group exists (a module-level function).
    Each ``call`` first broadcasts one flag (a ~0.1 ms collective on localhost gloo, inside the timing), so the
    followers run exactly as many calls as rank 0; ``close`` stops them. For timing only: results stay on ranks.
    """
    check_devices(devices, None)
    ctx = mp.get_context("spawn")
    port = free_port()
    threads = None if torch.cuda.is_available() else max(1, (os.cpu_count() or 1) // devices)
    procs = [ctx.Process(target=_follow, args=(r, devices, port, timeout_s, threads, build, build_args), daemon=True)
             for r in range(1, devices)]
    for p in procs:
        p.start()
    _join_lockstep(0, devices, port, timeout_s, threads)
    fn, args = build(*build_args)
    go = torch.ones(1, device="cuda" if dist.get_backend() == "nccl" else "cpu")

    def call() -> Any:
        dist.broadcast(go, 0)
        return fn(*args)

    def close() -> None:
        if dist.is_initialized():
            dist.broadcast(torch.zeros_like(go), 0)
            dist.destroy_process_group()
        for p in procs:
            p.join(timeout=10.0)
            if p.is_alive():
                p.kill()

    return call, close


