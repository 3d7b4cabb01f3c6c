"""What the data-parallel tests run inside each replica (a spawned torch rank, a JAX subprocess with host devices,
or one of several processes): per-sample gradients and the DP step of every clipping strategy on N replicas
against the same framework's single-device functions on the whole batch, as relative differences
(max |a - b| / max |b| per tensor, the largest over tensors; float64, so 1e-12 leaves ~10^4 ulps of room for the
re-associated sums: per-replica partial sums, then the all-reduce).

Workloads: registered names, or "lstm_small" / "transformer_small", the small variants of tests/test_lstm.py and
tests/test_transformer.py (built in the process that uses them: a Net does not travel between processes).
"""
from __future__ import annotations

import importlib

import numpy as np

from compare.spec import MODELS, make_batch
from compare.weights import init_weights

CLIPPINGS = ("materialize", "ghost", "bk")
HP = {"lr": 0.5, "clip": 0.05, "noise_multiplier": 0.8}  # a small clip: most examples are clipped


def workload(name: str, fw: str) -> tuple[object, object, dict[str, np.ndarray]]:
    """(model for ``model=``, its Workload, canonical weights)."""
    if name in MODELS:
        return name, MODELS[name], init_weights(0, name)
    if name == "lstm_small":
        spec, nets, weights = importlib.import_module("test_lstm").small()
        return nets[fw], spec, weights
    if name == "transformer_small":
        spec, nets, weights = importlib.import_module("test_transformer").build()
        return nets[fw], spec, weights
    raise ValueError(f"unknown workload {name!r}")


def rel(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    return max(float(np.abs(a[k] - b[k]).max() / max(np.abs(b[k]).max(), 1e-300)) for k in b)


def noise_for(spec: object, seed: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in spec.param_shapes.items()}


def torch_checks(names: list[str], batch: int) -> dict[str, dict[str, float]]:
    """On every torch rank of the group (or alone): {workload: {"per_sample"|clipping: relative difference}}."""
    from torch_impl import distributed as D, dp
    from torch_impl.per_sample import native_fn
    from torch_impl.weights import to_canonical, to_native

    out = {}
    for name in names:
        model, spec, weights = workload(name, "torch")
        params = to_native(weights, "float64", model=model)
        x, y = dp.native_batch(*make_batch(batch, 1, model=spec), dtype="float64")
        grads, mask = D.per_sample_grads(params, x, y, model=model)
        ref = to_canonical(native_fn("vmap", model=model)(params, x, y), batch_axis=True, model=model)
        res = {"per_sample": rel(D.gather_per_sample(grads, mask, model=model), ref)}
        noise = dp.native_noise(noise_for(spec), dtype="float64", model=model)
        for clipping in CLIPPINGS:
            new, loss = D.make_step(**HP, clipping=clipping, model=model)(params, x, y, noise)
            ref_new, ref_loss = dp.make_step(**HP, clipping=clipping, model=model)(params, x, y, noise)
            res[clipping] = max(rel(to_canonical(new, model=model), to_canonical(ref_new, model=model)),
                                abs(float(loss) - float(ref_loss)) / abs(float(ref_loss)))
        out[name] = res
    return out


def jax_checks(names: list[str], batch: int, devices: int) -> dict[str, dict[str, float]]:
    """The same on a mesh of ``devices`` JAX devices (this process's, or every process's after ``init``)."""
    from jax_impl import distributed as D, dp
    from jax_impl.per_sample import native_fn
    from jax_impl.weights import to_canonical, to_native

    mesh = D.make_mesh(devices)
    out = {}
    for name in names:
        model, spec, weights = workload(name, "jax")
        params = to_native(weights, "float64", model=model)
        x, y = dp.native_batch(*make_batch(batch, 1, model=spec), dtype="float64")
        grads, mask = D.per_sample_grads(params, x, y, mesh=mesh, model=model)
        ref = to_canonical(native_fn("vmap", model=model)(params, x, y), batch_axis=True, model=model)
        res = {"per_sample": rel(D.gather_per_sample(grads, mask, model=model), ref)}
        noise = dp.native_noise(noise_for(spec), dtype="float64", model=model)
        for clipping in CLIPPINGS:
            new, loss = D.make_step(mesh=mesh, **HP, clipping=clipping, model=model)(params, x, y, noise)
            ref_new, ref_loss = dp.make_step(**HP, clipping=clipping, model=model)(params, x, y, noise)
            res[clipping] = max(rel(to_canonical(D.unreplicate(new), model=model), to_canonical(ref_new, model=model)),
                                abs(float(loss) - float(ref_loss)) / abs(float(ref_loss)))
        out[name] = res
    return out
