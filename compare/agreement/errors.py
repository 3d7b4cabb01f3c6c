"""Per-sample errors against a reference, and the tolerances they are judged by.

Shared by the report (``compare.agreement.report``) and the explanation (``compare.agreement.explain``), so
neither imports the other's internals.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Relative to the reference's max |value| of each parameter's per-sample gradients (the same scale everywhere).
# Same for every workload (the largest sums are the seed CNN's 9216-term fc1 dots; the others' are shorter).
# float64: u = 1.1e-16 and ~1e4-term sums; measured <= 1.7e-15 (torch, JAX and the numpy oracle);
#   1e-10 leaves 5 orders of magnitude yet catches any real bug (a wrong term moves ~1e-2 or more).
# float32: u = 6.0e-8. Samples whose decisions all equal float64's, 11 batches of 64 (seeds 0-10, vmap): max
#   7.3e-7 torch, 8.5e-7 JAX; JAX's "loop" (one-row fc1 dot over 9216 terms) reaches 2.9e-6. 1e-4 is 30x above
#   the worst of these, whatever the summation order, and 70x below the smallest jump a flipped decision caused
#   there (7.3e-3). It is NOT loosened to hide flips: those are reported and explained instead.
TOLERANCE = {"float64": 1e-10, "float32": 1e-4}
# float32 vs the replay oracle (its float32 decisions forced) is pure rounding again: measured 3.2e-7..5.0e-7 on
# the real flips. 1e-5 is 3x above the worst smooth error of any method (2.9e-6) and 10x below TOLERANCE, so
# a replay cannot "explain" a sample that it leaves near the tolerance.
REPLAY_TOLERANCE = 1e-5
# Pre-flag float64 decisions this close to a kink, in units of u*S. Measured |pre32 - pre64| / (u*S) over 128
# samples: conv1 max 3.8 (both frameworks), conv2 max 3.5 torch / 5.4 JAX, fc1 max 0.5; closer than 8 may flip.
NEAR_KINK = 8.0


@dataclass
class ParamAgreement:
    param: str
    max_abs_err: float
    max_rel_err: float
    ref_max_abs: float
    bad_samples: list[int] = field(default_factory=list)
    worst_sample: int = 0


def sample_errors(result: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per parameter of ``reference`` (any workload), each sample's max |result - reference|: ``{name: (B,)}``."""
    errs = {}
    for name in reference:
        got, ref = np.asarray(result[name], np.float64), np.asarray(reference[name], np.float64)
        if got.shape != ref.shape:
            raise ValueError(f"{name}: result shape {got.shape} != reference shape {ref.shape}")
        errs[name] = np.abs(got - ref).reshape(got.shape[0], -1).max(axis=1)
    return errs


def reference_scales(reference: dict[str, np.ndarray]) -> dict[str, float]:
    """Each parameter's max |value| over the batch (1.0 where all-zero): the denominator of every relative error."""
    return {name: float(np.abs(reference[name]).max()) or 1.0 for name in reference}


def rows_from_errors(
    errs: dict[str, np.ndarray], scales: dict[str, float], tol: float
) -> list[ParamAgreement]:
    """One row per parameter from per-sample errors ``{name: (B,)}`` and the reference scales."""
    rows = []
    for name, err in errs.items():
        rel = err / scales[name]
        rows.append(ParamAgreement(name, float(err.max()), float(rel.max()), scales[name],
                                   np.flatnonzero(rel > tol).tolist(), int(np.argmax(rel))))
    return rows


def compare_grads(
    result: dict[str, np.ndarray], reference: dict[str, np.ndarray], tol: float,
    scales: dict[str, float] | None = None,
) -> list[ParamAgreement]:
    """Errors of ``result`` against ``reference``, both ``{name: (B, *shape)}`` canonical arrays."""
    return rows_from_errors(sample_errors(result, reference), scales or reference_scales(reference), tol)


def bad_samples(rows: list[ParamAgreement]) -> list[int]:
    return sorted({s for r in rows for s in r.bad_samples})
