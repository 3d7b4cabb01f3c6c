"""Every per-sample method of each side against its ``loop`` reference, the batched gradient, an analytic
case, and the other framework. Methods are read from each module's ``METHODS`` at collection time."""
from __future__ import annotations

import logging
from contextlib import contextmanager
from functools import lru_cache
from typing import Iterator

import jax
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import functional_call

from compare.frameworks import FRAMEWORKS, impl_module, per_sample_module
from compare.spec import DEFAULT_LOSS, LOSSES, NUM_CLASSES, PARAM_SHAPES, InputError, MethodError, make_batch
from compare.weights import init_weights
from helpers import BATCH_SEED, BATCH_SIZE, CROSS_RTOL_FLOAT64, RTOL, assert_grads_close, cached_grads, methods

# torch.compile takes 10-25 s per (dtype, shape, chunking) on 2 CPU cores: it is compiled once, in
# test_compiled_method_once, and left out of the other parametrisations.
COMPILED = {("torch", "compile")}
FAST = [(fw, m) for fw in FRAMEWORKS for m in methods(fw, exclude=("loop",)) if (fw, m) not in COMPILED]
FAST_IDS = [f"{fw}-{m}" for fw, m in FAST]


# The default loss only: the methods differ in how they differentiate, not in the loss, and the "seed" loss
# is checked per side below (sum over samples, closed form) and against the seed script in test_seed.py.
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(("framework", "method"), FAST, ids=FAST_IDS)
def test_method_matches_loop(framework: str, method: str, dtype: str):
    got = cached_grads(framework, method, DEFAULT_LOSS, dtype)
    assert all(g.dtype == np.dtype(dtype) for g in got.values()), {k: g.dtype for k, g in got.items()}
    assert all(got[k].shape == (BATCH_SIZE, *s) for k, s in PARAM_SHAPES.items())
    ref = cached_grads(framework, "loop", DEFAULT_LOSS, dtype)
    assert_grads_close(got, ref, RTOL[dtype], f"{framework} {method} vs loop ({dtype})")


@contextmanager
def jax_compiles(caplog: pytest.LogCaptureFixture) -> Iterator[list[str]]:
    """Collects the XLA compilations JAX logs inside the block (``jax.log_compiles``)."""
    found: list[str] = []
    caplog.clear()
    with caplog.at_level(logging.WARNING), jax.log_compiles():
        yield found
    found.extend(r.getMessage()[:100] for r in caplog.records if r.getMessage().startswith("Compiling"))


@pytest.mark.parametrize(
    ("framework", "method"),
    [*((fw, "loop") for fw in FRAMEWORKS), *FAST],
    ids=[f"{fw}-loop" for fw in FRAMEWORKS] + FAST_IDS,
)
def test_batch_of_one(framework: str, method: str, batch, caplog: pytest.LogCaptureFixture):
    """B=1, two different samples through one native function: each equals its row of the B=8 loop (nothing
    depends on the batch size or on other samples), and on JAX the second call (same shapes) compiles nothing."""
    x, y = batch
    mod = per_sample_module(framework)
    fn = mod.native_fn(method)
    ref = cached_grads(framework, "loop", DEFAULT_LOSS, "float64")
    for i in (0, 1):
        inputs = mod.native_inputs(init_weights(i), x[i : i + 1], y[i : i + 1], dtype="float64", device="cpu")
        with jax_compiles(caplog) as compiles:
            out = jax.block_until_ready(fn(*inputs)) if framework == "jax" else fn(*inputs)
        got = impl_module(framework, "weights").to_canonical(out, batch_axis=True)
        if i == 0:  # the loop reference used the seed-0 weights
            assert_grads_close(got, {k: v[:1] for k, v in ref.items()}, RTOL["float64"], f"{framework} {method} B=1")
        else:  # other weights, other sample, same shapes
            assert not compiles, f"second call recompiled: {compiles}"
            assert_grads_close(got, loop_of_one(framework, i), RTOL["float64"], f"{framework} {method} B=1")


@lru_cache(maxsize=None)
def loop_of_one(framework: str, i: int) -> dict[str, np.ndarray]:
    """The loop gradient of sample ``i`` of the shared batch under ``init_weights(i)``."""
    x, y = make_batch(BATCH_SIZE, seed=BATCH_SEED)
    return per_sample_module(framework).per_sample_grads(
        init_weights(i), x[i : i + 1], y[i : i + 1], method="loop", dtype="float64", device="cpu"
    )


def test_per_sample_grads_does_not_recompile_on_a_second_call(batch, caplog: pytest.LogCaptureFixture):
    x, y = batch
    per_sample_grads = per_sample_module("jax").per_sample_grads
    per_sample_grads(init_weights(0), x[:2], y[:2], method="vmap", dtype="float32", device="cpu")
    with jax_compiles(caplog) as compiles:
        per_sample_grads(init_weights(1), x[2:4], y[2:4], method="vmap", dtype="float32", device="cpu")
    assert not compiles, f"second call recompiled: {compiles}"


def chunked(framework: str, method: str, x: np.ndarray, y: np.ndarray, chunk_size: int) -> dict[str, np.ndarray]:
    mod = per_sample_module(framework)
    try:
        mod.native_fn(method, chunk_size=chunk_size)
    except InputError as err:  # a method may refuse chunking on purpose; it must say so, not ignore it
        pytest.skip(f"{framework} {method} does not take chunk_size: {err}")
    return mod.per_sample_grads(
        init_weights(0), x, y, method=method, dtype="float64", chunk_size=chunk_size, device="cpu"
    )


@pytest.mark.parametrize(("framework", "method"), FAST, ids=FAST_IDS)
def test_chunk_size_not_dividing_the_batch(framework: str, method: str, batch):
    """B=7 in chunks of 3 (3 + 3 + 1): the ragged last chunk must be neither dropped nor padded into the result."""
    x, y = batch
    got = chunked(framework, method, x[:7], y[:7], chunk_size=3)
    ref = {k: v[:7] for k, v in cached_grads(framework, "loop", DEFAULT_LOSS, "float64").items()}
    assert_grads_close(got, ref, RTOL["float64"], f"{framework} {method} B=7 chunk_size=3")


@pytest.mark.slow
@pytest.mark.parametrize(("framework", "method"), sorted(COMPILED), ids=[f"{fw}-{m}" for fw, m in sorted(COMPILED)])
def test_compiled_method_once(framework: str, method: str, batch):
    """One compilation (float64, B=4, no chunking, as the benchmarks call it), against the loop reference."""
    x, y = batch
    got = per_sample_module(framework).per_sample_grads(
        init_weights(0), x[:4], y[:4], method=method, dtype="float64", device="cpu"
    )
    ref = {k: v[:4] for k, v in cached_grads(framework, "loop", DEFAULT_LOSS, "float64").items()}
    assert_grads_close(got, ref, RTOL["float64"], f"{framework} {method} B=4")


def test_compile_failure_is_a_method_error(monkeypatch: pytest.MonkeyPatch, batch):
    """If Dynamo/Inductor fail on a platform, the caller gets a MethodError naming the method, not a crash."""

    def broken_compile(fn, *args, **kwargs):
        def call(*a, **k):
            raise RuntimeError("inductor: no C++ compiler found")

        return call

    mod = per_sample_module("torch")
    mod.native_fn.cache_clear()  # native_fn caches compiled functions; build a fresh one with the broken compiler
    monkeypatch.setattr(torch, "compile", broken_compile)
    x, y = batch
    try:
        with pytest.raises(MethodError, match="torch method 'compile' failed.*no C\\+\\+ compiler"):
            mod.per_sample_grads(init_weights(0), x, y, method="compile", device="cpu")
    finally:
        mod.native_fn.cache_clear()  # never leave the broken function cached for later tests


# --- against the ordinary batched gradient, and an analytic case --------------------------------------------


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_sum_of_per_sample_grads_is_batch_size_times_the_mean_loss_gradient(framework: str, loss: str, batch):
    x, y = batch
    mod = per_sample_module(framework)
    native = mod.reference_fn(loss=loss)(*mod.native_inputs(init_weights(0), x, y, dtype="float64", device="cpu"))
    mean_grad = impl_module(framework, "weights").to_canonical(native)
    summed = {k: v.sum(axis=0, keepdims=True) for k, v in cached_grads(framework, "loop", loss, "float64").items()}
    scaled = {k: len(y) * v[None] for k, v in mean_grad.items()}
    assert_grads_close(summed, scaled, RTOL["float64"], f"{framework} sum of per-sample vs B x batched ({loss})")


def float64_logits(x: np.ndarray) -> np.ndarray:
    from torch_impl.model import SimpleCNN
    from torch_impl.weights import to_native

    with torch.no_grad():
        params = to_native(init_weights(0), "float64", "cpu")
        return functional_call(SimpleCNN(), params, (torch.from_numpy(x),)).numpy()


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_fc2_bias_gradient_is_known_in_closed_form(framework: str, loss: str, batch):
    """d loss_i / d fc2.bias = softmax(logits_i) - onehot(y_i) for cross-entropy, and -onehot(y_i) for the
    seed's loss on raw logits: the two losses give different gradients, each exactly the expected one."""
    x, y = batch
    logits = float64_logits(x.astype(np.float64))
    onehot = np.eye(NUM_CLASSES)[y]
    if loss == "seed":
        expected = -onehot
    else:
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        expected = p / p.sum(axis=1, keepdims=True) - onehot
    got = cached_grads(framework, "loop", loss, "float64")["fc2.bias"]
    np.testing.assert_allclose(got, expected, rtol=0, atol=CROSS_RTOL_FLOAT64)


# --- torch vs JAX ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", LOSSES)
def test_loop_references_agree_across_frameworks(loss: str):
    assert_grads_close(
        cached_grads("jax", "loop", loss, "float64"),
        cached_grads("torch", "loop", loss, "float64"),
        CROSS_RTOL_FLOAT64,
        f"jax vs torch loop ({loss})",
    )


@lru_cache(maxsize=None)
def vmap_fn(framework: str, loss: str):
    """Built once per (framework, loss), so hypothesis examples reuse JAX's compiled function."""
    return per_sample_module(framework).native_fn("vmap", loss=loss)


def vmap_grads(framework: str, weights: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, loss: str):
    mod = per_sample_module(framework)
    out = vmap_fn(framework, loss)(*mod.native_inputs(weights, x, y, dtype="float64", device="cpu"))
    return impl_module(framework, "weights").to_canonical(out, batch_axis=True)


@pytest.mark.parametrize("loss", LOSSES)
@settings(max_examples=3)
@given(seed=st.integers(0, 2**16), gaussian=st.booleans())
def test_torch_and_jax_agree_in_float64(loss: str, seed: int, gaussian: bool):
    """Random weights: PyTorch's init for ``seed``, or N(0, 0.05^2) entries (another scale per layer than
    PyTorch's fan-in init; fc1's weights 5x larger)."""
    if gaussian:
        rng = np.random.default_rng(seed)
        weights = {k: (0.05 * rng.standard_normal(s)).astype(np.float32) for k, s in PARAM_SHAPES.items()}
    else:
        weights = init_weights(seed)
    x, y = make_batch(4, seed=seed)
    assert_grads_close(
        vmap_grads("jax", weights, x, y, loss),
        vmap_grads("torch", weights, x, y, loss),
        CROSS_RTOL_FLOAT64,
        f"jax vs torch vmap (seed {seed}, gaussian={gaussian}, {loss})",
    )
