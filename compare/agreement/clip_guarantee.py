"""Does clipping stay a guarantee in bfloat16? Every example's clipped contribution against C (1 + delta).

``adversarial_batch`` scales each example's input until its float64 gradient norm sits just above or just below
the clip norm C (targets C (1 + k u), k in ``OFFSETS``, u = 2^-8): the examples whose clip decision rounding
can flip. ``contributions`` measures each example's clipped contribution by a strategy in bfloat16 as
``clipped_grad_sum(mask = e_b)`` (the sum with only example b: c_b g_b as that strategy computes it), and its
float64 norm. ``decision_flips`` counts the examples whose clip decision (norm > C) in bfloat16 differs from
float64's. The bound delta is ``contract.precision.clip_bound`` (derived in docs/precision.md).
"""
from __future__ import annotations

import numpy as np

from compare.frameworks import side
from contract.precision import U_BF16
from contract.spec import check_model, make_batch

OFFSETS: tuple[float, ...] = (-4.0, -1.0, 1.0, 4.0)  # target norms C (1 + k u): just below and just above C


def float64_norms(fw: str, weights: dict, x: np.ndarray, y: np.ndarray, model: str) -> np.ndarray:
    s = side(fw)
    x64 = x.astype(np.float64) if np.issubdtype(x.dtype, np.floating) else x  # token ids stay integers
    p, xn, yn = s.native_inputs(weights, x64, y, dtype="float64", model=model)
    return np.asarray(s.per_example_norms(p, xn, yn, clipping="materialize", per_sample_method="vmap", model=model),
                      np.float64)


def adversarial_batch(fw: str, weights: dict, batch_size: int, model: str, seed: int = 0,
                      iterations: int = 16) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(x float32, y, float64 norms, C): example b scaled so that its float64 gradient norm is C (1 + k_b u).

    C is the median norm of the unscaled batch (a norm every example can reach: at input scale 0 a network with
    biases keeps a non-zero gradient, so a fixed C may lie below an example's smallest norm). The norm is a
    smooth increasing function of the input scale near each target; a secant step in log-log space per example
    (all examples at once) reaches it in a few iterations."""
    if check_model(model).tokens:
        raise ValueError(f"model {model!r} takes token ids: its inputs cannot be scaled")
    x0, y = make_batch(batch_size, seed, model=model)
    clip = float(np.median(float64_norms(fw, weights, x0, y, model)))
    target = clip * (1 + np.resize(np.array(OFFSETS), batch_size) * U_BF16)
    log_s = np.zeros(batch_size)
    prev = None
    for _ in range(iterations):
        x = (x0 * np.exp(log_s).reshape(-1, *[1] * (x0.ndim - 1))).astype(np.float32)
        n = float64_norms(fw, weights, x, y, model)
        gap = np.log(target) - np.log(n)
        slope = np.ones(batch_size) if prev is None else np.where(
            np.abs(log_s - prev[0]) > 1e-12, (np.log(n) - prev[1]) / np.where(log_s == prev[0], 1, log_s - prev[0]), 1.0)
        slope = np.clip(slope, 0.2, 5.0)
        prev = (log_s.copy(), np.log(n))
        log_s = log_s + gap / slope
    x = (x0 * np.exp(log_s).reshape(-1, *[1] * (x0.ndim - 1))).astype(np.float32)
    return x, y, float64_norms(fw, weights, x, y, model), clip


def contributions(fw: str, weights: dict, x: np.ndarray, y: np.ndarray, model: str, clipping: str, clip: float,
                  dtype: str = "bfloat16") -> np.ndarray:
    """(B,) float64 norm of each example's clipped contribution c_b g_b as ``clipping`` computes it in ``dtype``."""
    s = side(fw)
    p, xn, yn = s.native_inputs(weights, x, y, dtype=dtype, model=model)
    out = np.empty(x.shape[0])
    for b in range(x.shape[0]):
        mask = np.zeros(x.shape[0], np.float32)
        mask[b] = 1.0
        sums, _ = s.clipped_grad_sum(p, xn, yn, clip=clip, clipping=clipping, per_sample_method="per_layer",
                                     mask=s.native_batch(mask, y, dtype="float32")[0], model=model, dtype=dtype)
        canon = s.to_canonical(sums, model=model)
        out[b] = np.sqrt(sum(float(np.square(np.asarray(v, np.float64)).sum()) for v in canon.values()))
    return out


def decision_flips(fw: str, weights: dict, x: np.ndarray, y: np.ndarray, model: str, clipping: str,
                   norms64: np.ndarray, clip: float) -> int:
    """How many examples' clip decisions (norm > clip) differ between ``clipping``'s bfloat16 norms and float64."""
    s = side(fw)
    p, xn, yn = s.native_inputs(weights, x, y, dtype="bfloat16", model=model)
    norms = np.asarray(s.per_example_norms(p, xn, yn, clipping=clipping, per_sample_method="per_layer",
                                           model=model, dtype="bfloat16"), np.float64)
    return int(((norms > clip) != (norms64 > clip)).sum())
