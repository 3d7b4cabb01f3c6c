"""The timing protocol, identical for both frameworks, and the registry of what gets timed.

Protocol (``measure``): the framework-native callable only, on inputs already on the device (no conversion or
host->device copy in the timed region); compile time measured apart (``jax.jit``: ``lower`` + ``compile``
ahead of time; anything that compiles lazily: first call minus a steady call); warm-up calls excluded; the
clock stops after the framework's sync (``jax.block_until_ready`` always, ``torch.cuda.synchronize`` on GPU);
at least ``min_repeats`` calls and at least ``min_seconds`` of timed calls; median, IQR, min.

Targets (``TARGETS``): kind -> how to list its methods and build ``(fn, args)``. A new kind (e.g. a DP-SGD step,
``"dp"``) is one more entry here; the harness, the subprocess runner and ``pytest --benchmark`` pick it up.
Neither torch nor jax is imported at module level: a point process imports only its own framework.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from compare.frameworks import per_sample_module
from compare.spec import make_batch

NativeFn = Callable[..., Any]


@dataclass(frozen=True)
class Timing:
    """One point's timings in milliseconds; ``compile_source`` says how ``compile_ms`` was obtained."""

    median_ms: float
    iqr_ms: float
    min_ms: float
    repeats: int
    compile_ms: float | None
    first_call_ms: float
    compile_source: str  # "aot" (jax.jit lower+compile) or "first_call_excess" (first call - median)
    times_ms: tuple[float, ...]


@dataclass(frozen=True)
class Target:
    """A kind of timed computation: its method names per framework and how to build ``(fn, args)``."""

    kind: str
    methods: Callable[[str], tuple[str, ...]]
    build: Callable[..., tuple[NativeFn, tuple]]


def _per_sample_methods(framework: str) -> tuple[str, ...]:
    return tuple(per_sample_module(framework).METHODS)


def _build_per_sample(framework: str, method: str, weights: dict, x: np.ndarray, y: np.ndarray, *,
                      dtype: str, device: str | None, loss: str, chunk_size: int | None) -> tuple[NativeFn, tuple]:
    mod = per_sample_module(framework)
    fn = mod.native_fn(method, loss=loss, chunk_size=chunk_size)
    return fn, mod.native_inputs(weights, x, y, dtype=dtype, device=device)


def _build_reference(framework: str, method: str, weights: dict, x: np.ndarray, y: np.ndarray, *,
                     dtype: str, device: str | None, loss: str, chunk_size: int | None) -> tuple[NativeFn, tuple]:
    if method != "batched":
        raise ValueError(f"the reference kind has one method, 'batched', not {method!r}")
    if chunk_size is not None:
        raise ValueError("chunk_size does not apply to the batched reference")
    mod = per_sample_module(framework)
    return mod.reference_fn(loss=loss), mod.native_inputs(weights, x, y, dtype=dtype, device=device)


TARGETS: dict[str, Target] = {
    "reference": Target("reference", lambda fw: ("batched",), _build_reference),
    "per_sample": Target("per_sample", _per_sample_methods, _build_per_sample),
}


def target(kind: str) -> Target:
    if kind not in TARGETS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {tuple(TARGETS)}")
    return TARGETS[kind]


def prepare(framework: str, kind: str, method: str, weights: dict, batch_size: int, *, dtype: str,
            device: str | None, loss: str, chunk_size: int | None = None, seed: int = 0) -> tuple[NativeFn, tuple]:
    """The native callable and its on-device inputs for one point (seeded synthetic batch)."""
    tgt = target(kind)
    if method not in tgt.methods(framework):
        raise ValueError(f"unknown {kind} method {method!r} for {framework}; expected one of {tgt.methods(framework)}")
    x, y = make_batch(batch_size, seed)
    return tgt.build(framework, method, weights, x, y, dtype=dtype, device=device, loss=loss, chunk_size=chunk_size)


def _torch_sync(device: str) -> Callable[[Any], Any]:
    import torch

    if device.startswith("cuda"):
        def sync(out: Any) -> Any:
            torch.cuda.synchronize()
            return out
        return sync
    return lambda out: out  # CPU torch ops are synchronous


def _jax_sync(device: str) -> Callable[[Any], Any]:
    import jax

    return jax.block_until_ready  # always: JAX dispatches asynchronously on CPU too


SYNC: dict[str, Callable[[str], Callable[[Any], Any]]] = {"torch": _torch_sync, "jax": _jax_sync}


def sync_fn(framework: str, device: str) -> Callable[[Any], Any]:
    """``sync(out) -> out`` that returns only once ``out`` has been computed on ``device``."""
    if framework not in SYNC:
        raise ValueError(f"unknown framework {framework!r}; expected one of {tuple(SYNC)}")
    return SYNC[framework](device)


def _call_ms(fn: NativeFn, args: tuple, sync: Callable[[Any], Any]) -> float:
    t0 = time.perf_counter()
    sync(fn(*args))  # the output is dropped here, so a call never holds the previous call's output
    return (time.perf_counter() - t0) * 1e3


def measure(fn: NativeFn, args: tuple, sync: Callable[[Any], Any], *, min_repeats: int = 5,
            min_seconds: float = 1.0, warmup: int = 1, max_repeats: int = 10_000) -> Timing:
    """Time ``sync(fn(*args))`` with the protocol above; ``fn`` and ``args`` are framework-native."""
    if min_repeats < 1 or warmup < 0 or min_seconds < 0:
        raise ValueError(f"need min_repeats >= 1, warmup >= 0, min_seconds >= 0; got {min_repeats}, {warmup}, "
                         f"{min_seconds}")
    compile_ms = None
    t0 = time.perf_counter()
    if hasattr(fn, "lower"):  # jax.jit: compile ahead of time; the jit cache then serves the first call
        fn.lower(*args).compile()
        compile_ms = (time.perf_counter() - t0) * 1e3
    sync(fn(*args))
    first_call_ms = (time.perf_counter() - t0) * 1e3  # what a user waits for the first result, compile included
    for _ in range(warmup):
        _call_ms(fn, args, sync)
    times: list[float] = []
    while len(times) < max_repeats and (len(times) < min_repeats or sum(times) < min_seconds * 1e3):
        times.append(_call_ms(fn, args, sync))
    arr = np.asarray(times)
    median = float(np.median(arr))
    q75, q25 = np.percentile(arr, [75, 25])
    source = "aot"
    if compile_ms is None:
        compile_ms, source = max(first_call_ms - median, 0.0), "first_call_excess"
    return Timing(median, float(q75 - q25), float(arr.min()), len(times), compile_ms, first_call_ms, source,
                  tuple(times))
