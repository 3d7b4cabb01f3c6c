"""bfloat16 compute (docs/precision.md): float32 outputs, float32 norms, and clipping as a guarantee.

The clipping test scales examples so that their float64 gradient norms sit at C (1 + k u), k in -4, -1, 1, 4
(u = 2^-8), then checks that every example's clipped contribution, as each strategy computes it in bfloat16,
is at most C (1 + delta) with delta = ``contract.precision.clip_bound`` (float32 rounding for materialize and bk,
(2D + 2) u for ghost's second bfloat16 backward). Small batches and workloads by default; the seed CNN is slow.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest

from compare.agreement import clip_guarantee as G
from compare.frameworks import FRAMEWORKS, side
from compare.spec import InputError, MODELS, make_batch
from compare.weights import init_weights
from contract.precision import U_BF16, clip_bound, gradient_bound

CLIPPINGS = ("materialize", "ghost", "bk")


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("method", ["vmap", "per_layer"])
def test_bfloat16_grads_are_float32_and_within_bound(fw: str, method: str) -> None:
    """logreg has no ReLU or max-pool: its bfloat16 per-sample gradients are the smooth piece, within (2D+3) u
    of float64, and bfloat16 rounding is visible (not silently float32)."""
    w, (x, y) = init_weights(0, "logreg"), make_batch(6, 1, model="logreg")
    s = side(fw)
    ref = s.per_sample_grads(w, x.astype(np.float64), y, method="vmap", dtype="float64", model="logreg")
    got = s.per_sample_grads(w, x, y, method=method, dtype="bfloat16", model="logreg")
    f32 = s.per_sample_grads(w, x, y, method=method, dtype="float32", model="logreg")
    for k in ref:
        assert got[k].dtype == np.float32 and got[k].shape == ref[k].shape
        scale = np.abs(ref[k]).max()
        err = np.abs(got[k] - ref[k]).max() / scale
        assert err <= gradient_bound("logreg"), f"{fw}/{method} {k}: {err:.2e} > {gradient_bound('logreg'):.2e}"
        assert np.abs(got[k] - f32[k]).max() / scale > 1e-5, f"{k}: bfloat16 result equals float32's"


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_norm_helper_accumulates_in_float32(fw: str) -> None:
    """rules.sq of a bfloat16 array returns float32 and sums in float32 (a bfloat16 sum of 4096 equal squares
    stalls at 256 x the term: 2^8 terms fill the significand)."""
    if fw == "torch":
        import torch
        from torch_impl.rules import sq
        v = torch.full((2, 4096), 1.0, dtype=torch.bfloat16)
        out = sq(v)
        assert out.dtype == torch.float32 and torch.all(out == 4096.0)
    else:
        import jax.numpy as jnp
        from jax_impl.rules import sq
        out = sq(jnp.full((2, 4096), 1.0, dtype=jnp.bfloat16))
        assert out.dtype == jnp.float32 and bool(jnp.all(out == 4096.0))


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_unknown_dtype_is_one_clear_error(fw: str) -> None:
    w, (x, y) = init_weights(0, "logreg"), make_batch(2, 0, model="logreg")
    with pytest.raises(InputError, match="unknown dtype 'float16'"):
        side(fw).per_sample_grads(w, x, y, dtype="float16", model="logreg")


@lru_cache(maxsize=None)
def _adversarial(fw: str, model: str) -> tuple:
    """One adversarial batch per (framework, workload), shared by the three strategies' tests."""
    w = init_weights(0, model)
    return (w, *G.adversarial_batch(fw, w, 8, model))


def _check_contributions(fw: str, model: str, clipping: str) -> None:
    w, x, y, norms64, clip = _adversarial(fw, model)
    offsets = (norms64 / clip - 1) / U_BF16
    assert (offsets < 0).any() and (offsets > 0).any(), f"the batch does not straddle C: {offsets}"
    got = G.contributions(fw, w, x, y, model, clipping, clip)
    delta = clip_bound(clipping, model, MODELS[model].num_params)
    worst = int(np.argmax(got))
    assert got.max() <= clip * (1 + delta), (f"{fw} {clipping} {model}: example {worst}'s contribution "
                                             f"{got[worst] / clip - 1:.3e} above C, bound {delta:.3e}")


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("clipping", CLIPPINGS)
@pytest.mark.parametrize("model", ["ffnn", "mnist_cnn"])
def test_clipped_contribution_within_bound(fw: str, clipping: str, model: str) -> None:
    _check_contributions(fw, model, clipping)


@pytest.mark.slow
@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("clipping", CLIPPINGS)
def test_clipped_contribution_within_bound_seed_cnn(fw: str, clipping: str) -> None:
    _check_contributions(fw, "seed_cnn", clipping)
