"""The timing protocol, identical for both frameworks, and the registry of what gets timed.

Protocol (``measure``): the framework-native callable only, on inputs already on the device (no conversion or
host->device copy in the timed region); compile time measured apart (``jax.jit``: ``lower`` + ``compile``
ahead of time; anything that compiles lazily: first call minus a steady call); warm-up calls excluded; the
clock stops after the framework's sync (``jax.block_until_ready`` always, ``torch.cuda.synchronize`` on GPU);
at least ``min_repeats`` calls and at least ``min_seconds`` of timed calls; median, IQR, min.

Targets (``TARGETS``): kind -> how to list its methods, build ``(fn, args)``, which of them ``--methods`` selects,
and which hold a per-sample gradient. A new kind is one more entry here; the harness, the subprocess runner and
``pytest --benchmark`` pick it up. Kinds: ``reference`` (batched gradient of the mean loss), ``per_sample`` (every
method of ``METHODS``) and ``dp`` (one training step of ``<fw>_impl.dp``: ``sgd``, non-private, and ``dp_sgd``,
per-sample gradients + clipping + noise + SGD update; their ratio is the DP overhead of the DP literature, e.g.
Subramani et al. 2021, arXiv:2010.09063; then the framework's peer steps, ``contract.peers``). Neither torch nor jax is imported at module level: a point process
imports only its own framework.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Literal

import numpy as np

from compare.frameworks import side
from compare.spec import DEFAULT_MODEL, make_batch
from contract.spec import is_mixed
from contract.peers import names as peer_names
from contract.peers import peer

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
    """A kind of timed computation: its method names per framework and how to build ``(fn, args)``.

    ``selection``: how ``compare.run --methods`` treats the kind: ``"always"`` planned (the reference: every
    ratio needs it), ``"each"`` only the named methods, plus ``baseline`` once any method of the kind is named
    (the dp kind's ratios are to ``sgd``). ``holds_per_sample(method)``: the call materialises B per-sample
    gradients (the sweep skips it up front when those alone do not fit in memory). ``details(framework,
    method)``: extra fields for the point's record (what exactly was timed).
    """

    kind: str
    methods: Callable[[str], tuple[str, ...]]
    build: Callable[..., tuple[NativeFn, tuple]]
    selection: Literal["always", "each"]
    baseline: str | None = None
    holds_per_sample: Callable[[str], bool] = lambda method: False
    details: Callable[[str, str], dict] = lambda framework, method: {}


def _per_sample_methods(framework: str) -> tuple[str, ...]:
    return tuple(side(framework).METHODS)


def _build_per_sample(framework: str, method: str, weights: dict, x: np.ndarray, y: np.ndarray, *,
                      dtype: str, device: str | None, loss: str, chunk_size: int | None, model: str = DEFAULT_MODEL,
                      ) -> tuple[NativeFn, tuple]:
    mod = side(framework)
    fn = mod.native_fn(method, loss=loss, chunk_size=chunk_size, model=model, dtype=dtype)
    return fn, mod.native_inputs(weights, x, y, dtype=dtype, device=device, model=model)


def _build_reference(framework: str, method: str, weights: dict, x: np.ndarray, y: np.ndarray, *,
                     dtype: str, device: str | None, loss: str, chunk_size: int | None, model: str = DEFAULT_MODEL,
                      ) -> tuple[NativeFn, tuple]:
    if method != "batched":
        raise ValueError(f"the reference kind has one method, 'batched', not {method!r}")
    if chunk_size is not None:
        raise ValueError("chunk_size does not apply to the batched reference")
    mod = side(framework)
    return (mod.reference_fn(loss=loss, model=model, dtype=dtype),
            mod.native_inputs(weights, x, y, dtype=dtype, device=device, model=model))


# The DP step's settings, the same on both sides (compare.train's defaults are of the same order); the step time
# does not depend on their values, only on clip being finite (clipping computed) and noise_multiplier > 0 (noise
# added).
DP_HPARAMS: dict[str, float] = {"lr": 0.1, "clip": 1.0, "noise_multiplier": 1.0}
# The per-sample method inside the materialising DP step on both sides: the fastest one each framework has
# (per_layer), so the overhead measured is what a practitioner using this repo would pay, not the tutorial vmap's.
DP_PER_SAMPLE_METHOD = "per_layer"
# dp method -> the clipping strategy of <fw>_impl.dp.make_step it times (``CLIPPINGS``); ``sgd`` is the
# non-private baseline every ratio is taken against.
DP_CLIPPING: dict[str, str] = {"dp_sgd": "materialize", "dp_ghost": "ghost", "dp_bk": "bk"}
DP_METHODS: tuple[str, ...] = ("sgd", *DP_CLIPPING)
NOISE_SEED = 0


def _dp_methods(framework: str) -> tuple[str, ...]:
    """Ours, then the framework's peer steps (``contract.peers``: the library its users would reach for)."""
    return DP_METHODS + peer_names(framework, "dp")


def _torch_noise(dp: Any, params: Any, seed: int) -> Any:
    import torch

    device = next(iter(params.values())).device
    return dp.sample_noise(torch.Generator(device=device).manual_seed(seed), params)


def _jax_noise(dp: Any, params: Any, seed: int) -> Any:
    import jax

    noise = dp.sample_noise(jax.random.key(seed), params)
    return jax.device_put(noise, jax.tree.leaves(params)[0].sharding)  # beside the params, not on the default


# framework -> (its dp module, native params, seed) -> a standard normal draw shaped like params, on their device
NOISE: dict[str, Callable[[Any, Any, int], Any]] = {"torch": _torch_noise, "jax": _jax_noise}


def dp_step_factory(framework: str, method: str) -> Callable[..., NativeFn]:
    """``factory(lr=, clip=, noise_multiplier=, loss=) -> step(params, x, y, noise)`` for a private dp method.

    A peer whose library is not installed raises ImportError naming it (the point is recorded as failed with
    that reason, not silently dropped)."""
    if method in DP_CLIPPING:
        dp = side(framework)
        clipping = DP_CLIPPING[method]
        return lambda **kw: dp.make_step(**kw, per_sample_method=DP_PER_SAMPLE_METHOD, clipping=clipping)
    if method not in peer_names(framework, "dp"):
        raise ValueError(f"the dp kind has methods {_dp_methods(framework)} for {framework}, not {method!r}")
    return lambda **kw: side(framework).make_peer_step(method, **kw)


def _build_dp(framework: str, method: str, weights: dict, x: np.ndarray, y: np.ndarray, *,
              dtype: str, device: str | None, loss: str, chunk_size: int | None, model: str = DEFAULT_MODEL,
                      ) -> tuple[NativeFn, tuple]:
    """One training step on native inputs; private steps get their noise drawn here, outside the timed call."""
    if chunk_size is not None:
        raise ValueError("chunk_size does not apply to the dp kind (dp.make_step takes none)")
    dp = side(framework)
    params, xn, yn = side(framework).native_inputs(weights, x, y, dtype=dtype, device=device,
                                                                model=model)
    if method == "sgd":
        return dp.make_sgd_step(lr=DP_HPARAMS["lr"], loss=loss, model=model, dtype=dtype), (params, xn, yn)
    step = dp_step_factory(framework, method)(**DP_HPARAMS, loss=loss, model=model, dtype=dtype)
    return step, (params, xn, yn, NOISE[framework](dp, params, NOISE_SEED))


def _dp_details(framework: str, method: str) -> dict:
    details = {"per_sample_method": DP_PER_SAMPLE_METHOD if DP_CLIPPING.get(method) == "materialize" else None,
               "clipping": DP_CLIPPING.get(method, method if method != "sgd" else None), "dp_hparams": DP_HPARAMS}
    if method in peer_names(framework, "dp"):
        details["peer_settings"] = dict(peer(method).settings)  # what its step ran with
    return details


# The data-parallel kind (``compare.run --devices N``): ``<fw>_impl.distributed`` on N devices, each
# point's batch_size PER DEVICE (global batch N x B); planned only when --devices is given, which sets DEVICES_ENV
# for the run and its point processes. On one CPU the N replicas share its cores: that measures overhead.
DEVICES_ENV = "COMPARE_DEVICES"
# method -> (what, clipping): per-example gradients, and the DP step under each clipping strategy
DIST_METHODS: dict[str, tuple[str, str | None]] = {"dist_per_sample": ("per_sample", None),
                                                   "dist_dp_materialize": ("dp_step", "materialize"),
                                                   "dist_dp_ghost": ("dp_step", "ghost"),
                                                   "dist_dp_bk": ("dp_step", "bk")}


def run_devices() -> int | None:
    text = os.environ.get(DEVICES_ENV)
    return int(text) if text else None


def _build_distributed(framework: str, method: str, weights: dict, x: np.ndarray, y: np.ndarray, *,
                       dtype: str, device: str | None, loss: str, chunk_size: int | None, model: str = DEFAULT_MODEL,
                      ) -> tuple[NativeFn, tuple]:
    if chunk_size is not None:
        raise ValueError("chunk_size does not apply to the distributed kind")
    if is_mixed(dtype):
        raise ValueError(f"not supported in {dtype}: <fw>_impl.distributed computes in the parameters' dtype "
                         "(no mixed-precision policy on the data-parallel path)")
    n = run_devices() or 1
    xg, yg = make_batch(x.shape[0] * n, 0, model=model)
    what, clipping = DIST_METHODS[method]
    return side(framework).benchmark_call(
        what, n, weights, xg, yg, dtype=dtype, device=device, loss=loss, clipping=clipping or "bk",
        per_sample_method=DP_PER_SAMPLE_METHOD, hparams=DP_HPARAMS, model=model)


def _dist_details(framework: str, method: str) -> dict:
    n = run_devices() or 1
    return {"devices": n, "batch_size_per": "device", "clipping": DIST_METHODS[method][1],
            "per_sample_method": DP_PER_SAMPLE_METHOD, "dp_hparams": DP_HPARAMS}


TARGETS: dict[str, Target] = {
    "reference": Target("reference", lambda fw: ("batched",), _build_reference, "always"),
    "per_sample": Target("per_sample", _per_sample_methods, _build_per_sample, "each",
                         holds_per_sample=lambda method: True),
    "dp": Target("dp", _dp_methods, _build_dp, "each", baseline="sgd",
                 holds_per_sample=lambda method: method == "dp_sgd" or (
                     method in peer_names(kind="dp") and peer(method).materializes),
                 details=_dp_details),
    "distributed": Target("distributed", lambda fw: tuple(DIST_METHODS) if run_devices() else (), _build_distributed,
                          "each", holds_per_sample=lambda method: method == "dist_per_sample", details=_dist_details),
}


def target(kind: str) -> Target:
    if kind not in TARGETS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {tuple(TARGETS)}")
    return TARGETS[kind]


def prepare(framework: str, kind: str, method: str, weights: dict, batch_size: int, *, dtype: str,
            device: str | None, loss: str, chunk_size: int | None = None, seed: int = 0,
            model: str = DEFAULT_MODEL) -> tuple[NativeFn, tuple]:
    """The native callable and its on-device inputs for one point (seeded synthetic batch of ``model``)."""
    tgt = target(kind)
    if method not in tgt.methods(framework):
        raise ValueError(f"unknown {kind} method {method!r} for {framework}; expected one of {tgt.methods(framework)}")
    x, y = make_batch(batch_size, seed, model=model)
    return tgt.build(framework, method, weights, x, y, dtype=dtype, device=device, loss=loss, chunk_size=chunk_size,
                     model=model)


def not_applicable(framework: str, kind: str, method: str, model: str) -> str | None:
    """Why ``method`` of ``kind`` cannot run on workload ``model`` (planned and recorded as ``not_applicable``
    with this reason, never dropped), else None. Per-sample methods ask the framework
    (``applicable_methods(model)``: e.g. JAX's ``vmap_patches`` needs a convolution); every DP step applies to
    every registered workload (tests/test_workloads.py), on one device or data-parallel."""
    if kind == "per_sample":
        mod = side(framework)
        if method in mod.MISSING or method in mod.CUDA_METHODS:  # the installation / device: the sweep's business
            return None
        return mod.applicable_methods(model).get(method)
    return None


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
