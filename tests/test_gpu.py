"""CUDA tests (marker ``gpu``; ``pytest -m gpu``), each skipped with its reason where a framework sees no GPU,
and one CPU test of what decides float32 precision on a GPU: every dot and convolution that JAX traces for
this repo's functions asks for ``Precision.HIGHEST`` (no TF32), checked on the jaxprs, so it holds on any device.

Tolerances (see tests/helpers.py): float64 on the GPU vs float64 on the CPU differs only in kernels and summation
order: ``RTOL["float64"]`` (1e-12). float32 on the GPU vs the CPU's float64 reference: ``RTOL["float32"]``
(1e-4); TF32 (10-bit mantissa, ~5e-4 per product) would exceed it, full float32 (~6e-8) stays far below.
"""
from __future__ import annotations

import numpy as np
import pytest

from compare.frameworks import per_sample_module
from compare.spec import make_batch
from helpers import RTOL, assert_grads_close, cached_grads, seed_weights


def _gpu_reason() -> str | None:
    import jax
    import torch

    missing = []
    if not torch.cuda.is_available():
        missing.append("torch sees no CUDA device")
    try:
        jax.devices("gpu")
    except RuntimeError:
        missing.append("JAX sees no GPU")
    return "; ".join(missing) or None


GPU_REASON = _gpu_reason()
gpu = [pytest.mark.gpu, pytest.mark.skipif(GPU_REASON is not None, reason=f"needs a GPU: {GPU_REASON}")]
B = 4


def _all_methods(framework: str) -> list[str]:
    mod = per_sample_module(framework)
    return list(mod.METHODS) + list(mod.CUDA_METHODS)


# ---------------------------------------------------------------- CPU: precision of every traced dot/conv
def _dots(jaxpr) -> list:
    """Every dot_general / conv_general_dilated equation, sub-jaxprs (jit, scan, cond, custom_vjp...) included."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in ("dot_general", "conv_general_dilated"):
            found.append(eqn)
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    found += _dots(inner)
    return found


def _jax_functions():
    from compare.benchmark.targets import TARGETS, prepare
    from jax_impl import per_sample

    w = seed_weights()
    for method in per_sample.METHODS:
        fn = per_sample.native_fn(method) if method != "loop" else per_sample.native_fn("loop").keywords["step"]
        params, x, y = per_sample.native_inputs(w, *make_batch(2, 0), device="cpu")
        yield f"per_sample/{method}", fn, ((params, x[0], y[0]) if method == "loop" else (params, x, y))
    for kind in ("reference", "dp"):
        for method in TARGETS[kind].methods("jax"):
            try:
                fn, args = prepare("jax", kind, method, w, 2, dtype="float32", device="cpu", loss="nll_log_softmax")
            except ModuleNotFoundError:  # a peer library not installed here (jax-privacy)
                continue
            yield f"{kind}/{method}", fn, args


def test_every_jax_dot_and_conv_asks_for_highest_precision():
    import jax

    highest = jax.lax.Precision.HIGHEST
    checked = 0
    for name, fn, args in _jax_functions():
        eqns = _dots(jax.make_jaxpr(fn)(*args).jaxpr)
        assert eqns, f"{name}: no dot or convolution traced (the walk missed a sub-jaxpr?)"
        for eqn in eqns:
            precision = eqn.params.get("precision")
            # A pair is per operand. XLA's GPU backend allows TF32 only when no operand asks for HIGHEST; the one
            # mixed pair here is lax.conv_general_dilated_patches' (HIGHEST, DEFAULT): DEFAULT on its own 0/1
            # identity filter (test_every_method_on_cuda_matches_the_cpu_float64_loop measures the result either way).
            ok = precision == highest or (isinstance(precision, tuple) and highest in precision)
            assert ok, f"{name}: {eqn.primitive.name} with precision={precision} (TF32 on a GPU)"
            checked += 1
    assert checked > 20


# ---------------------------------------------------------------- GPU
@pytest.mark.parametrize("framework,method", [(fw, m) for fw in ("torch", "jax") for m in _all_methods(fw)])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_every_method_on_cuda_matches_the_cpu_float64_loop(framework, method, dtype):
    for mark in gpu:
        if mark.name == "skipif" and mark.args[0]:
            pytest.skip(mark.kwargs["reason"])
    if (method.startswith("opacus") or method.startswith("compile")) and dtype == "float64":
        # each torch.compile costs tens of seconds of the GPU check's 7 minutes; float64 compile is checked on
        # the CPU by test_methods, and float32 here is where TF32 or CUDA graphs could go wrong
        pytest.skip(f"{method}: float32 only on cuda (float64 is checked on the CPU by test_methods)")
    x, y = make_batch(B, seed=1)
    got = per_sample_module(framework).per_sample_grads(seed_weights(), x, y, method=method, dtype=dtype,
                                                          device="cuda")
    ref = cached_grads("torch", "loop", "nll_log_softmax", "float64", batch_size=B)
    assert_grads_close(got, ref, RTOL[dtype], f"{framework}/{method} {dtype} on cuda vs cpu float64 loop")


test_every_method_on_cuda_matches_the_cpu_float64_loop = pytest.mark.gpu(
    test_every_method_on_cuda_matches_the_cpu_float64_loop)


@pytest.mark.gpu
@pytest.mark.skipif(GPU_REASON is not None, reason=f"needs a GPU: {GPU_REASON}")
def test_agreement_on_cuda():
    from compare.agreement import run_agreement

    x, y = make_batch(8, seed=0)
    report = run_agreement(seed_weights(), x, y, device="cuda")
    assert report.ok, report.format_table()
    assert max(r.max_rel_err for key, rows in report.results.items() if key.endswith("float64") for r in rows) <= 1e-10


@pytest.mark.gpu
@pytest.mark.skipif(GPU_REASON is not None, reason=f"needs a GPU: {GPU_REASON}")
def test_tf32_is_off_once_torch_resolves_cuda():
    from torch_impl.per_sample import native_inputs
    from torch_impl.weights import precision_flags

    native_inputs(seed_weights(), *make_batch(2, 0), device="cuda")
    assert precision_flags() == {"matmul.allow_tf32": False, "cudnn.allow_tf32": False,
                                 "float32_matmul_precision": "highest"}


@pytest.mark.gpu
@pytest.mark.skipif(GPU_REASON is not None, reason=f"needs a GPU: {GPU_REASON}")
@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_points_on_cuda_record_allocator_peaks(framework, tmp_path):
    from compare.benchmark.point import PointSpec, measure_point
    from compare.weights import save_weights

    path = tmp_path / "w.safetensors"
    save_weights(path, seed_weights())
    record = measure_point(PointSpec(framework=framework, kind="per_sample", method="vmap", batch_size=16,
                                     dtype="float32", device="cuda", loss="nll_log_softmax", weights=str(path),
                                     min_repeats=2, min_seconds=0.0))
    assert record["status"] == "ok", record["reason"]
    output = 16 * 1_199_882 * 4
    assert record["gpu_peak_bytes"] >= output and record["peak_mem_bytes"] >= output  # holds the output at least
    assert record["startup"]["device_init_s"] > 0


@pytest.mark.gpu
@pytest.mark.skipif(GPU_REASON is not None, reason=f"needs a GPU: {GPU_REASON}")
def test_cuda_floor_measures_device_to_device_bandwidth():
    from compare.benchmark.floor import measure_write_bandwidth

    out = measure_write_bandwidth("cuda", nbytes=1 << 28)
    assert {"torch_cuda_copy", "torch_cuda_fill"} <= set(out["kernels_bytes_per_s"])
    assert np.isfinite(out["bytes_per_s"]) and out["bytes_per_s"] > 1e11  # > 100 GB/s on any CUDA GPU of today
