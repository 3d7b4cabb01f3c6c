"""Method-specific checks the generic "every method == loop" tests do not cover.

per_layer (both sides): both losses, B=1, chunk sizes that do and do not divide B, dtype kept, caller's
tensors untouched; Opacus methods: no state leaking between calls; the JAX patches model: same function as
the standard model; jitted methods: a second call with the same shapes does not recompile.
Tolerance: float64 results against the float64 loop at ``compare.agreement.TOLERANCE["float64"]`` (1e-10 of each
parameter's max |value|; measured ~1e-15), so a wrong scale, layout or sample order fails by many orders.
"""
from __future__ import annotations

import numpy as np
import pytest

from compare.agreement import TOLERANCE, compare_grads
from compare.frameworks import impl_module, per_sample_module
from compare.spec import make_batch
from compare.weights import init_weights


def assert_matches(got: dict[str, np.ndarray], ref: dict[str, np.ndarray], tol: float = TOLERANCE["float64"]) -> None:
    bad = [(r.param, r.max_rel_err) for r in compare_grads(got, ref, tol) if r.max_rel_err > tol]
    assert not bad, f"relative errors above {tol:g}: {bad}"


@pytest.fixture(scope="module")
def batch5() -> tuple[np.ndarray, np.ndarray]:
    """B=5: odd, so chunk_size=2 leaves a remainder chunk of 1."""
    return make_batch(5, seed=3, dtype="float64")


_LOOP_CACHE: dict[tuple, dict[str, np.ndarray]] = {}


def loop_grads(framework: str, weights, x, y, loss: str) -> dict[str, np.ndarray]:
    """The float64 loop reference, cached per (framework, loss, batch) to keep the suite fast."""
    key = (framework, loss, x.shape[0], id(weights), x.tobytes()[:64])
    if key not in _LOOP_CACHE:
        ps = per_sample_module(framework)
        _LOOP_CACHE[key] = ps.per_sample_grads(weights, x, y, method="loop", loss=loss, dtype="float64")
    return _LOOP_CACHE[key]


# Each JAX (loss, chunk_size) pair is a separate compilation (seconds), so the pairs are picked, not crossed:
# both losses unchunked; chunk_size=2 leaves a remainder chunk of 1 (B=5); 8 > B is one chunk.
LOSS_CHUNKS = [("nll_log_softmax", None), ("seed", None), ("nll_log_softmax", 2), ("seed", 8)]


@pytest.mark.parametrize("framework", ["torch", "jax"])
@pytest.mark.parametrize("loss, chunk_size", LOSS_CHUNKS)
def test_per_layer_equals_loop(framework, loss, chunk_size, weights, batch5):
    x, y = batch5
    got = per_sample_module(framework).per_sample_grads(
        weights, x, y, method="per_layer", loss=loss, dtype="float64", chunk_size=chunk_size
    )
    assert_matches(got, loop_grads(framework, weights, x, y, loss))


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_per_layer_single_example_is_its_gradient(framework, weights):
    """B=1: the per-sample gradient is the ordinary gradient of that one example (no 1/B scaling left)."""
    x, y = make_batch(1, seed=4, dtype="float64")
    ps = per_sample_module(framework)
    got = ps.per_sample_grads(weights, x, y, method="per_layer", dtype="float64")
    params, xn, yn = ps.native_inputs(weights, x, y, dtype="float64", device="cpu")
    batched = impl_module(framework, "weights").to_canonical(ps.reference_fn()(params, xn, yn))
    ref = {k: v[None] for k, v in batched.items()}  # the batch-of-one gradient, with its batch axis
    assert_matches(got, ref)


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_per_layer_keeps_float32(framework, weights):
    x, y = make_batch(2, seed=5)
    got = per_sample_module(framework).per_sample_grads(weights, x, y, method="per_layer", dtype="float32")
    assert {v.dtype for v in got.values()} == {np.dtype(np.float32)}


def test_torch_per_layer_leaves_caller_tensors_alone(weights):
    """Runs under ``torch.no_grad`` too (it enables grad itself) and sets no flags on the caller's tensors."""
    import torch

    from torch_impl.per_layer import per_layer_grads

    ps = per_sample_module("torch")
    x, y = make_batch(3, seed=6, dtype="float64")
    params, xt, yt = ps.native_inputs(weights, x, y, dtype="float64", device="cpu")
    before = {k: v.clone() for k, v in params.items()}
    with torch.no_grad():
        out = per_layer_grads(params, xt, yt, loss="nll_log_softmax")
    assert not any(v.requires_grad for v in (*params.values(), xt, *out.values()))
    assert all(torch.equal(before[k], params[k]) for k in params)


def test_opacus_methods_do_not_leak_state_between_calls(weights):
    """Opacus keeps grad_sample on the module's parameters: a second call with new weights must not see the first."""
    pytest.importorskip("opacus")
    from torch_impl.per_sample import native_fn, native_inputs
    from torch_impl.weights import to_canonical

    x, y = make_batch(2, seed=7, dtype="float64")
    other = init_weights(1)
    for method in ("opacus_hooks", "opacus_ew", "opacus_functorch"):
        fn = native_fn(method, loss="nll_log_softmax", chunk_size=None)
        fn(*native_inputs(weights, x, y, dtype="float64", device="cpu"))
        second = to_canonical(fn(*native_inputs(other, x, y, dtype="float64", device="cpu")), batch_axis=True)
        assert_matches(second, loop_grads("torch", other, x, y, "nll_log_softmax"))


@pytest.mark.parametrize("loss, chunk_size", LOSS_CHUNKS[1:3])
def test_opacus_methods_equal_loop(loss, chunk_size, weights, batch5):
    pytest.importorskip("opacus")
    from torch_impl.per_sample import per_sample_grads

    x, y = batch5
    for method in ("opacus_hooks", "opacus_ew", "opacus_functorch"):
        got = per_sample_grads(weights, x, y, method=method, loss=loss, dtype="float64", chunk_size=chunk_size)
        assert_matches(got, loop_grads("torch", weights, x, y, loss))


def test_opacus_methods_listed_only_when_installed():
    import importlib.util

    from torch_impl.per_sample import METHODS

    installed = importlib.util.find_spec("opacus") is not None
    assert ("opacus_hooks" in METHODS) == installed


@pytest.mark.parametrize("dtype, tol", [("float64", 1e-13), ("float32", 1e-5)])
def test_jax_patches_model_is_the_same_function(dtype, tol, weights):
    """im2col + dot vs lax.conv: float64 agrees to rounding (~1e-16 measured); float32 to accumulation order
    over 288-term dot products (~1e-7 measured, 1e-5 allowed), relative to the max |logit|."""
    from jax_impl import model, model_patches
    from jax_impl.per_sample import native_inputs

    x, y = make_batch(4, seed=8, dtype=dtype)
    params, xj, _ = native_inputs(weights, x, y, dtype=dtype, device="cpu")
    ref = np.asarray(model.apply(params, xj))
    got = np.asarray(model_patches.apply(params, xj))
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_allclose(got, ref, rtol=0, atol=tol * np.abs(ref).max())


@pytest.mark.parametrize("method", ["per_layer", "vmap_patches"])
def test_jax_second_call_does_not_recompile(method, weights):
    from jax_impl.per_sample import native_fn, native_inputs

    x, y = make_batch(2, seed=9)
    fn = native_fn(method, loss="nll_log_softmax", chunk_size=None)
    args = native_inputs(weights, x, y, dtype="float32", device="cpu")
    fn(*args)
    compiled = fn._cache_size()  # native_fn is cached, so other tests may have compiled other shapes already
    fn(*native_inputs(weights, x + 1, y, dtype="float32", device="cpu"))  # new values, same shapes
    assert fn._cache_size() == compiled
