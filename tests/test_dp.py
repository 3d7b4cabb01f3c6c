"""DP-SGD step: limit cases, clipping, noise statistics, optax equivalence and torch-vs-JAX agreement.

Tolerances: float64 1e-10 relative (both sides run the same operations; rounding alone differs). float32
training agreement 1e-4 on losses: float32 rounding (~1e-7 per op) is amplified over a few steps, and a
ReLU/max-pool decision flipped by rounding (FINDINGS.md) changes one example's clipped gradient by at most
2 * clip, i.e. the update by 2 * lr * clip / B; measured difference here ~5e-7.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from compare.frameworks import FRAMEWORKS, impl_module
from compare.training.privacy import DPConfigError, check_delta, epsilon
from compare.spec import PARAM_SHAPES, make_batch

F64 = 1e-10


def rel_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    return max(float(np.abs(a[k] - b[k]).max() / max(np.abs(b[k]).max(), 1e-300)) for k in PARAM_SHAPES)


def canonical_noise(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s, dtype=np.float32) for k, s in PARAM_SHAPES.items()}


def run_steps(fw: str, weights, batches, noises, *, dtype: str, lr: float, clip: float, nm: float):
    dp, wmod = impl_module(fw, "dp"), impl_module(fw, "weights")
    step = dp.make_step(lr=lr, clip=clip, noise_multiplier=nm)
    params, losses = wmod.to_native(weights, dtype, "cpu"), []
    for (x, y), z in zip(batches, noises):
        noise = None if z is None else dp.native_noise(z, dtype=dtype, device="cpu")
        params, loss = step(params, *dp.native_batch(x, y, dtype=dtype, device="cpu"), noise)
        losses.append(float(loss))
    return wmod.to_canonical(params), np.array(losses)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_clip_inf_and_no_noise_is_plain_sgd(fw, weights, batch):
    dp, wmod = impl_module(fw, "dp"), impl_module(fw, "weights")
    x, y = batch
    params = wmod.to_native(weights, "float64", "cpu")
    xb, yb = dp.native_batch(x.astype(np.float64), y, dtype="float64", device="cpu")
    p_dp, l_dp = dp.make_step(lr=0.1, clip=math.inf, noise_multiplier=0.0)(params, xb, yb, None)
    p_sgd, l_sgd = dp.make_sgd_step(lr=0.1)(params, xb, yb)
    assert abs(float(l_dp) - float(l_sgd)) <= F64 * abs(float(l_sgd))
    after_dp, after_sgd, before = wmod.to_canonical(p_dp), wmod.to_canonical(p_sgd), weights
    assert rel_diff({k: after_dp[k] - before[k] for k in before}, {k: after_sgd[k] - before[k] for k in before}) < F64


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_zero_gradient_examples_give_finite_steps(fw, weights):
    """fc2 = 0 and a huge bias on class 3: for label 3 the float64 softmax is exactly one-hot, gradient exactly 0."""
    dp, wmod = impl_module(fw, "dp"), impl_module(fw, "weights")
    w = dict(weights, **{"fc2.weight": np.zeros((10, 128), np.float32)})
    w["fc2.bias"] = np.where(np.arange(10) == 3, 1e3, 0.0).astype(np.float32)
    x, _ = make_batch(4, seed=2, dtype="float64")
    params = wmod.to_native(w, "float64", "cpu")
    step = dp.make_step(lr=0.1, clip=1.0, noise_multiplier=0.0)
    all_zero, loss = step(params, *dp.native_batch(x, np.full(4, 3), dtype="float64", device="cpu"), None)
    assert float(loss) == 0.0
    assert all(np.array_equal(v, w[k]) for k, v in wmod.to_canonical(all_zero).items())
    mixed, _ = step(params, *dp.native_batch(x, np.array([3, 3, 0, 1]), dtype="float64", device="cpu"), None)
    moved = wmod.to_canonical(mixed)
    assert all(np.isfinite(v).all() for v in moved.values())
    assert not np.array_equal(moved["fc2.bias"], w["fc2.bias"])


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_clipped_norms_do_not_exceed_clip(fw, weights, batch):
    dp, ps, wmod = impl_module(fw, "dp"), impl_module(fw, "per_sample"), impl_module(fw, "weights")
    params, x, y = ps.native_inputs(weights, *batch, dtype="float32", device="cpu")
    grads = ps.native_fn("vmap", loss="nll_log_softmax")(params, x, y)
    canon = wmod.to_canonical(grads, batch_axis=True)
    norms = np.sqrt(sum((canon[k].astype(np.float64) ** 2).reshape(len(y), -1).sum(1) for k in canon))
    clip = float(np.median(norms))  # half the examples get clipped
    factors = np.asarray(dp.clip_factors(grads, clip), dtype=np.float64)
    clipped = factors * norms
    # float32 norms: relative rounding ~1e-6 over 1.2M squared terms
    assert (clipped <= clip * (1 + 1e-5)).all()
    big = norms > clip
    assert big.any() and (~big).any()
    np.testing.assert_allclose(clipped[big], clip, rtol=1e-5)
    assert (factors[~big] == 1.0).all()


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_added_noise_has_std_clip_times_multiplier(fw, weights):
    """Zero per-example gradients: B * output = clip * sigma * z over 1.2M coordinates; 5 standard errors."""
    dp, wmod = impl_module(fw, "dp"), impl_module(fw, "weights")
    batch, clip, sigma = 4, 0.7, 1.3
    params = wmod.to_native(weights, "float64", "cpu")
    zeros = wmod.to_native({k: np.zeros(s, np.float32) for k, s in PARAM_SHAPES.items()}, "float64", "cpu")
    if fw == "torch":
        import torch

        rng = torch.Generator().manual_seed(0)
        per_example = {k: v.expand(batch, *v.shape) for k, v in zeros.items()}
    else:
        import jax
        import jax.numpy as jnp

        rng = jax.random.key(0)
        per_example = jax.tree.map(lambda v: jnp.broadcast_to(v, (batch, *v.shape)), zeros)
    noise = dp.sample_noise(rng, params)
    out = wmod.to_canonical(dp.private_mean(per_example, clip=clip, noise_multiplier=sigma, noise=noise))
    values = np.concatenate([v.ravel() for v in out.values()]) * batch
    n, std = values.size, clip * sigma
    assert abs(values.std() - std) < 5 * std / math.sqrt(2 * n)
    assert abs(values.mean()) < 5 * std / math.sqrt(n)


def test_jax_step_equals_optax_dpsgd_with_the_same_key(weights, batch):
    """The explicit aggregation + sgd is optax's differentially_private_aggregate + sgd, noise included."""
    import jax
    import optax

    import jax_impl.dp as dp
    from jax_impl.per_sample import native_fn, native_inputs
    from jax_impl.weights import to_canonical

    params, x, y = native_inputs(weights, batch[0].astype(np.float64), batch[1], dtype="float64", device="cpu")
    key = jax.random.key(7)
    for sigma in (0.0, 1.1):
        chain = dp.optax_dpsgd(lr=0.3, clip=0.5, noise_multiplier=sigma, key=key)
        updates, _ = chain.update(native_fn("vmap", loss="nll_log_softmax")(params, x, y), chain.init(params))
        expected = to_canonical(optax.apply_updates(params, updates))
        noise = dp.sample_noise(key, params) if sigma else None
        got, _ = dp.make_step(lr=0.3, clip=0.5, noise_multiplier=sigma)(params, x, y, noise)
        assert rel_diff(to_canonical(got), expected) < F64


@pytest.mark.parametrize(("dtype", "tol"), [("float64", F64), ("float32", 1e-4)])
def test_torch_and_jax_take_the_same_noisy_steps(weights, dtype, tol):
    batches = [make_batch(8, seed=10 + i, dtype=dtype) for i in range(3)]
    noises = [canonical_noise(20 + i) for i in range(3)]
    kw = dict(dtype=dtype, lr=0.2, clip=1.0, nm=1.0)
    p_t, l_t = run_steps("torch", weights, batches, noises, **kw)
    p_j, l_j = run_steps("jax", weights, batches, noises, **kw)
    np.testing.assert_allclose(l_j, l_t, rtol=tol)
    moved = {k: p_t[k] - weights[k] for k in weights}
    assert rel_diff({k: p_j[k] - weights[k] for k in weights}, moved) < tol * 10  # updates, not weights


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_dp_step_is_the_same_with_any_per_sample_method(fw, weights):
    """The benchmark's DP step uses per_layer, training uses vmap: both must take the same step (float64)."""
    dp = impl_module(fw, "dp")
    x, y = make_batch(5, seed=3, dtype="float64")
    params = impl_module(fw, "weights").to_native(weights, "float64", "cpu")
    batch = dp.native_batch(x, y, dtype="float64", device="cpu")
    noise = dp.native_noise(canonical_noise(7), dtype="float64", device="cpu")
    steps = {m: dp.make_step(lr=0.3, clip=0.5, noise_multiplier=1.0, per_sample_method=m) for m in ("vmap", "per_layer")}
    (p_v, l_v), (p_l, l_l) = (dp.block_until_ready(steps[m](params, *batch, noise)) for m in ("vmap", "per_layer"))
    wmod = impl_module(fw, "weights")
    assert float(l_l) == pytest.approx(float(l_v), rel=F64)
    assert rel_diff(wmod.to_canonical(p_l), wmod.to_canonical(p_v)) < F64


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize(
    ("clip", "sigma", "match"),
    [(0.0, 1.0, "clip"), (-1.0, 1.0, "clip"), (1.0, -0.5, "noise_multiplier"), (math.inf, 1.0, "finite clip")],
)
def test_bad_dp_parameters_are_rejected(fw, clip, sigma, match):
    dp = impl_module(fw, "dp")
    with pytest.raises(DPConfigError, match=match):
        dp.make_step(lr=0.1, clip=clip, noise_multiplier=sigma)


def test_accountant_is_monotone_and_infinite_without_noise():
    kw = dict(sample_rate=0.05, delta=1e-5)
    assert epsilon(noise_multiplier=0.0, steps=100, **kw) == math.inf
    eps = [epsilon(noise_multiplier=s, steps=100, **kw) for s in (0.8, 1.0, 2.0)]
    assert all(math.isfinite(e) and e > 0 for e in eps) and eps[0] > eps[1] > eps[2]
    assert epsilon(noise_multiplier=1.0, steps=400, **kw) > eps[1]
    assert epsilon(noise_multiplier=1.0, steps=100, accountant="rdp", **kw) >= eps[1] * 0.99  # RDP is looser
    for delta in (0.0, 1.0, -1e-5):
        with pytest.raises(DPConfigError, match="delta"):
            check_delta(delta)
