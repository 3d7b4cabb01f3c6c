"""Starting and joining JAX's processes, mirroring ``torch_impl.launch`` name for name.

JAX is single-controller per process: one process drives a mesh of its local devices (``--devices N``: N GPUs, or
N host devices on a CPU forced through XLA_FLAGS). Several processes, one per host, join through
``jax.distributed.initialize``; ``jax.devices()`` is then global and the same jitted ``shard_map`` runs in every
process, XLA's collectives crossing processes (NCCL on GPUs, gloo on CPUs: ``jax_cpu_collectives_implementation``).
``init`` reads the environment that ``process_command`` sets, and a user sets on each host:
  JAX_COORDINATOR_ADDRESS=HOST:PORT (read by jax.distributed.initialize itself; process 0's host)
  JAX_NUM_PROCESSES=N, JAX_PROCESS_ID=R (passed to it as num_processes and process_id)

Faults: ``heartbeat_timeout_seconds`` makes the coordination service end every process when one dies;
``shutdown_timeout_seconds`` bounds the exit barrier. A process that hangs alive is seen by the harness's
watchdog (compare.training.processes), which ends the group.
"""
from __future__ import annotations

import os
import socket
import sys

import jax

from contract import devices as contract_devices

DEFAULT_TIMEOUT_S = 60.0
ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


class DistributedError(RuntimeError):
    """A process failed, died, timed out or disagreed with the others; the message names it."""


def launched() -> bool:
    """True inside a process started as one of several (the environment names it: ``ENV``)."""
    return all(k in os.environ for k in ENV)


def init(*, timeout_s: float = DEFAULT_TIMEOUT_S) -> tuple[int, int]:
    """Join the processes described by the environment; ``(process index, process count)``. Idempotent.

    Must run before any JAX computation in this process.
    """
    if not jax.distributed.is_initialized():
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU collectives across processes
        t = max(1, int(timeout_s))
        jax.distributed.initialize(os.environ["JAX_COORDINATOR_ADDRESS"], int(os.environ["JAX_NUM_PROCESSES"]),
                                   int(os.environ["JAX_PROCESS_ID"]), initialization_timeout=t,
                                   heartbeat_timeout_seconds=t, shutdown_timeout_seconds=t)
    return jax.process_index(), jax.process_count()


def world() -> int:
    """Processes in the run (1 unless ``init`` joined several)."""
    return jax.process_count()


def rank() -> int:
    return jax.process_index()


def device_count(device: str | None) -> int:
    """Devices JAX can use for ``device`` in this process (None: its GPUs when present, else the CPU cap)."""
    if device in ("cuda", "gpu") or (device is None and jax.default_backend() != "cpu"):
        return len(jax.local_devices())
    return min(len(jax.local_devices(backend="cpu")), contract_devices.cpu_max())


def check_devices(devices: int, device: str | None) -> int:
    """``devices`` if JAX can run that many replicas on ``device``, else a DevicesError naming why."""
    return contract_devices.check_devices(devices, "jax", device, device_count(device))


def process_command(process: int, processes: int, address: str, argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """``(command, extra environment)`` starting process ``process`` of ``processes`` as its own host would:
    ``python -m <argv>`` with JAX_COORDINATOR_ADDRESS=``address`` (HOST:PORT), JAX_NUM_PROCESSES, JAX_PROCESS_ID."""
    env = {"JAX_COORDINATOR_ADDRESS": address, "JAX_NUM_PROCESSES": str(processes), "JAX_PROCESS_ID": str(process),
           "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // processes))}
    return [sys.executable, "-m", *argv], env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
