"""The JAX peer ``jax_impl.jax_privacy_step`` (jax-privacy 2.x) against ``dp.make_step``, and its noise form.

Tolerances: float64 1e-10 relative (the same clipped sum, summed and normalised in a different order; measured
~2e-16). float32 1e-5 relative on the updated parameters: both sides clip the same per-example gradients
(vmap of the same single-example loss) and differ only in summation order and (g / B) * B rounding, a few
ulps of the update (lr * |g| / B ~ 1e-3 against parameters ~0.1), so far below 1e-5 of max |p|.
"""
from __future__ import annotations

import math
from functools import lru_cache

import jax
import numpy as np
import optax
import pytest

from compare.spec import make_batch
from jax_impl import dp
from jax_impl.weights import to_canonical, to_native

jax_privacy = pytest.importorskip("jax_privacy")
from jax_impl.jax_privacy_step import JAX_PRIVACY_AVAILABLE, make_jax_privacy_step  # noqa: E402

RTOL = {"float64": 1e-10, "float32": 1e-5}


@lru_cache(maxsize=None)
def peer_step(**kw):
    """One compiled peer per configuration, shared by the tests (each compile vmaps the whole model)."""
    return make_jax_privacy_step(**kw)


def rel_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    return max(float(np.abs(a[k] - b[k]).max() / np.abs(b[k]).max()) for k in b)


def test_flag_matches_the_installation():
    assert JAX_PRIVACY_AVAILABLE


def test_benchmark_passes_and_records_the_settings_the_peer_runs_with():
    """Every recorded setting (contract.peers) is a keyword of the factory, passed to it, and its default."""
    import inspect

    from compare.benchmark.targets import TARGETS
    from contract.peers import peer

    entry = peer("jax_privacy")
    params = inspect.signature(make_jax_privacy_step).parameters
    assert set(entry.kwargs) == set(entry.settings)
    assert {k: params[k].default for k in entry.settings} == dict(entry.settings)
    assert TARGETS["dp"].details("jax", "jax_privacy")["peer_settings"] == dict(entry.settings)


# float64 against make_step (both losses, clip = inf and a clip that clips half the batch) is
# tests/test_clipping.py::test_peer_step_equals_materialize; here the float32 tolerance. On the B=8 seed-1 batch
# the per-example norms are 10.2-12.3 ("seed"), so clip = 11 clips some examples and not others.
# Every documented setting the benchmark measured (its registry settings are the defaults) gives the same step.
CASES = [("float32", "seed", 11.0, ()), ("float32", "seed", 11.0, (("nan_safe", True),)),
         ("float32", "nll_log_softmax", 11.0, (("microbatch_size", 4),))]


@pytest.mark.parametrize(("dtype", "loss", "clip", "settings"), CASES)
def test_peer_takes_make_steps_step(weights, batch, dtype, loss, clip, settings):
    """Same weights, batch and noise draw: the same updated parameters and mean loss."""
    params = to_native(weights, dtype, "cpu")
    x, y = dp.native_batch(*batch, dtype=dtype, device="cpu")
    sigma = 0.0 if math.isinf(clip) else 1.3
    noise = dp.sample_noise(jax.random.key(3), params)
    kw = dict(lr=0.1, clip=clip, noise_multiplier=sigma, loss=loss)
    ref, ref_loss = dp.make_step(**kw)(params, x, y, noise)
    got, got_loss = peer_step(**kw, **dict(settings))(params, x, y, noise)
    assert rel_diff(to_canonical(got), to_canonical(ref)) <= RTOL[dtype]
    assert abs(float(got_loss) - float(ref_loss)) <= RTOL[dtype] * abs(float(ref_loss))


def test_privatizer_noise_is_stddev_times_a_standard_normal_draw(weights):
    """jax-privacy's gaussian_privatizer adds ``stddev * random_like(split(key)[1], grads, normal)`` to the
    clipped sum: the form the peer's docstring states, so handing the peer that draw as ``noise`` gives the
    library's own noisy step (the peer equals make_step for any draw: test_clipping/test_peer_takes_...)."""
    grads = to_native(weights, "float64", "cpu")  # any pytree shaped like the parameters
    stddev, key = 1.7, jax.random.key(5)
    privatizer = jax_privacy.noise_addition.gaussian_privatizer(stddev=stddev, prng_key=key)
    noisy, _ = privatizer.update(grads, privatizer.init(grads))
    draw = optax.tree.random_like(jax.random.split(key)[1], grads, jax.random.normal)
    expected = jax.tree.map(lambda g, z: g + stddev * z, grads, draw)
    assert rel_diff(to_canonical(noisy), to_canonical(expected)) <= RTOL["float64"]


def test_bad_arguments_are_rejected(weights):
    with pytest.raises(ValueError, match="clip"):
        make_jax_privacy_step(lr=0.1, clip=-1.0, noise_multiplier=1.0)
    with pytest.raises(ValueError, match="loss"):
        make_jax_privacy_step(lr=0.1, clip=1.0, noise_multiplier=1.0, loss="nope")
    step = make_jax_privacy_step(lr=0.1, clip=1.0, noise_multiplier=1.0)
    with pytest.raises(ValueError, match="noise"):
        step(to_native(weights, "float32", "cpu"), *dp.native_batch(*make_batch(2, seed=0)), None)


@pytest.mark.parametrize("microbatch_size", [0, 2.5])
def test_bad_microbatch_size_is_rejected(microbatch_size):
    with pytest.raises(ValueError, match="microbatch_size"):
        make_jax_privacy_step(lr=0.1, clip=1.0, noise_multiplier=1.0, microbatch_size=microbatch_size)
