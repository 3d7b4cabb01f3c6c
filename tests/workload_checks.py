"""Shared checks of the workload tests (tests/test_workloads.py, tests/test_generic.py): every per-sample method
against the framework's float64 loop, torch against JAX, and every DP strategy against a numpy reference.

Tolerance: float64 1e-10 relative to each parameter's max |reference| (measured <= ~1e-14 on every
workload: the methods differ only in summation order). B is small (3-4) to keep the suite within minutes.
"""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from compare.frameworks import impl_module, side
from contract.peers import peers
from compare.spec import make_batch

F64 = 1e-10
LR = 0.2


def rel_errors(got: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> dict[str, float]:
    assert list(got) == list(ref), f"keys {list(got)} != {list(ref)}"
    out = {}
    for k in ref:
        assert got[k].shape == ref[k].shape, f"{k}: {got[k].shape} != {ref[k].shape}"
        out[k] = float(np.abs(np.asarray(got[k], np.float64) - ref[k]).max() / max(np.abs(ref[k]).max(), 1e-300))
    return out


def assert_close(got: dict[str, np.ndarray], ref: dict[str, np.ndarray], what: str, tol: float = F64) -> None:
    bad = {k: f"{v:.1e}" for k, v in rel_errors(got, ref).items() if not v <= tol}
    assert not bad, f"{what}: relative error above {tol:g}: {bad}"


def per_sample(fw: str, weights, x, y, method: str, model, loss: str = "nll_log_softmax") -> dict[str, np.ndarray]:
    return impl_module(fw, "per_sample").per_sample_grads(weights, x, y, method=method, loss=loss, dtype="float64",
                                                          device="cpu", model=model)


def check_methods(fw: str, weights, model, batch_size: int = 3, seed: int = 1, batch=None) -> None:
    """Every applicable method of ``fw`` = its float64 loop; an inapplicable one says why and is refused."""
    ps = impl_module(fw, "per_sample")
    x, y = batch if batch is not None else make_batch(batch_size, seed=seed, dtype="float64", model=model)
    ref = per_sample(fw, weights, x, y, "loop", model)
    for method, reason in ps.applicable_methods(model).items():
        if reason is None:
            assert_close(per_sample(fw, weights, x, y, method, model), ref, f"{fw} {method}")
        elif method in ps.METHODS:
            assert reason.startswith("not applicable")
            with pytest.raises(ValueError, match="not applicable"):
                per_sample(fw, weights, x, y, method, model)


def reference_update(grads: dict[str, np.ndarray], clip: float, nm: float, noise, eps: float = 0.0):
    """numpy: -lr (sum_b min(1, clip / (||g_b|| + eps)) g_b + clip nm z) / B from per-example gradients."""
    b = next(iter(grads.values())).shape[0]
    n = np.sqrt(sum((g.reshape(b, -1) ** 2).sum(1) for g in grads.values()))
    f = np.minimum(1.0, clip / (n + eps))
    return {k: -LR * (np.tensordot(f, g, 1) + (clip * nm * noise[k] if nm else 0.0)) / b for k, g in grads.items()}


def dp_update(fw: str, weights, x, y, model, *, clipping: str | None, clip: float, nm: float, noise,
              peer: str | None = None, loss: str = "nll_log_softmax") -> dict[str, np.ndarray]:
    """Canonical (new - old) of one DP step: ``dp.make_step(clipping=...)`` or, ``peer`` named, that dp peer's
    step (``contract.peers``), built as the benchmark builds it."""
    dp, wmod = impl_module(fw, "dp"), impl_module(fw, "weights")
    params = wmod.to_native(weights, "float64", "cpu", model=model)
    xn, yn = dp.native_batch(x, y, dtype="float64", device="cpu", model=model)
    z = dp.native_noise(noise, dtype="float64", device="cpu", model=model) if nm else None
    if peer:
        step = side(fw).make_peer_step(peer, lr=LR, clip=clip, noise_multiplier=nm, loss=loss, model=model)
    else:
        step = dp.make_step(lr=LR, clip=clip, noise_multiplier=nm, loss=loss, clipping=clipping, model=model)
    new, _ = step(params, xn, yn, z)
    before = wmod.to_canonical(params, model=model)
    return {k: v - before[k] for k, v in wmod.to_canonical(new, model=model).items()}


def skip_without_peer(fw: str) -> None:
    """The peer library may be missing (a GPU image with torch 2.11 / jax 0.11.2 has neither): skip with the
    reason, after the strategies' own checks have run."""
    for package in dict.fromkeys(p.package for p in peers(fw, "dp")):
        if importlib.util.find_spec(package.replace("-", "_")) is None:
            pytest.skip(f"{fw} peer: {package} is not installed (our strategies were checked)")


def check_dp(fw: str, weights, model, clippings: tuple[str, ...], batch_size: int = 4, seed: int = 3,
             batch=None, peer: bool = True) -> None:
    """Each strategy's step (half the examples clipped, noise on) = the numpy reference from the loop's
    per-example gradients; each dp peer step of ``fw`` (``contract.peers``) with its own clip epsilon."""
    x, y = batch if batch is not None else make_batch(batch_size, seed=seed, dtype="float64", model=model)
    grads = per_sample(fw, weights, x, y, "loop", model)
    b = x.shape[0]
    norms = np.sort(np.sqrt(sum((g.reshape(b, -1) ** 2).sum(1) for g in grads.values())))
    clip = float(norms[b // 2 - 1] + norms[b // 2]) / 2
    rng = np.random.default_rng(5)
    noise = {k: rng.standard_normal(g.shape[1:]).astype(np.float32) for k, g in grads.items()}
    ref = reference_update(grads, clip, 1.1, {k: v.astype(np.float64) for k, v in noise.items()})
    ours = {}
    for clipping in clippings:
        ours[clipping] = dp_update(fw, weights, x, y, model, clipping=clipping, clip=clip, nm=1.1, noise=noise)
        assert_close(ours[clipping], ref, f"{fw} dp {clipping}")
    if peer:
        skip_without_peer(fw)
        for entry in peers(fw, "dp"):  # Opacus: the hooks + DPOptimizer path, then ghost clipping
            name, eps = entry.name, entry.clip_eps
            peer_ref = reference_update(grads, clip, 1.1, {k: v.astype(np.float64) for k, v in noise.items()}, eps=eps)
            got = dp_update(fw, weights, x, y, model, clipping=None, clip=clip, nm=1.1, noise=noise, peer=name)
            assert_close(got, peer_ref, f"{fw} peer {name}")
            if "materialize" in ours:  # = our materialising step, up to the peer's eps: <= ~eps / min ||g_b||
                assert_close(got, ours["materialize"], f"{fw} peer {name} vs make_step(materialize)",
                             tol=max(F64, 10 * eps / norms[0]))
