"""How many devices a data-parallel run may use, checked before any work; imports neither framework.

JAX on a CPU gets N devices only if ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` is set before JAX is
first imported (``force_host_devices``), so that call comes first in every entry point. torch on a CPU runs one
gloo process per replica; replicas beyond ``CPU_REPLICAS_PER_CORE`` per core would only measure oversubscription,
so that is the cap (tests use 2-4 processes on 2 cores: correctness, not speed).
"""
from __future__ import annotations

import os
import re
import sys

CPU_REPLICAS_PER_CORE = 4
_HOST_FLAG = "--xla_force_host_platform_device_count"


class DevicesError(ValueError):
    """A device count that cannot run here (0, negative, or more than this machine has)."""


def check_count(devices: int) -> int:
    if not isinstance(devices, int) or isinstance(devices, bool) or devices < 1:
        raise DevicesError(f"--devices must be a positive integer, got {devices!r}")
    return devices


def cpu_max() -> int:
    return CPU_REPLICAS_PER_CORE * (os.cpu_count() or 1)


def force_host_devices(devices: int) -> None:
    """Ask XLA for ``devices`` CPU devices (a no-op for GPU backends). Must run before ``import jax``.

    A larger count already in XLA_FLAGS is kept; if JAX is already imported with too few CPU devices, the error
    says how to start instead.
    """
    check_count(devices)
    flags = os.environ.get("XLA_FLAGS", "")
    found = re.search(rf"{_HOST_FLAG}=(\d+)", flags)
    jax = sys.modules.get("jax")
    if jax is not None:
        have = len(jax.devices("cpu"))
        if have < devices and jax.default_backend() == "cpu":
            raise DevicesError(f"JAX was imported with {have} CPU device(s); {devices} need "
                               f"XLA_FLAGS={_HOST_FLAG}={devices} set before JAX is imported")
        return
    if found is None:
        os.environ["XLA_FLAGS"] = f"{flags} {_HOST_FLAG}={devices}".strip()
    elif int(found.group(1)) < devices:
        os.environ["XLA_FLAGS"] = flags.replace(found.group(0), f"{_HOST_FLAG}={devices}")


def check_devices(devices: int, framework: str, device: str | None, have: int) -> int:
    """``devices`` if ``framework``, which can use ``have`` devices on ``device`` (its side's ``device_count``),
    can run that many replicas, else a DevicesError naming why."""
    check_count(devices)
    if devices > have:
        hint = (f" (the CPU cap: {CPU_REPLICAS_PER_CORE} replicas per core x {os.cpu_count()} cores)"
                if have == cpu_max() else "")
        raise DevicesError(f"--devices {devices}: {framework} can use {have} device(s) available here"
                           f"{f' on {device}' if device else ''}{hint}")
    return devices
