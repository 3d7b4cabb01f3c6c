"""Per-parameter agreement of per-sample gradients against a reference (float64 is the ground truth).

For each (framework, dtype) result and each parameter: max abs error, that error relative to the
reference's max |value|, and the samples whose relative error exceeds the tolerance.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from compare.spec import PARAM_NAMES

# Relative to the reference's max |value| of each parameter's per-sample gradients.
# float64: ~1e3 ops deep with u = 1.1e-16 -> differences ~1e-15 measured; 1e-10 leaves room, catches bugs.
# float32: u = 6e-8; accumulation over up to 9216 terms gives ~1e-6 measured -> 1e-4.
TOLERANCE = {"float64": 1e-10, "float32": 1e-4}


@dataclass
class ParamAgreement:
    param: str
    max_abs_err: float
    max_rel_err: float
    ref_max_abs: float
    bad_samples: list[int] = field(default_factory=list)


def compare_grads(
    result: dict[str, np.ndarray], reference: dict[str, np.ndarray], tol: float
) -> list[ParamAgreement]:
    """Errors of ``result`` against ``reference``, both ``{name: (B, *shape)}`` canonical arrays."""
    rows = []
    for name in PARAM_NAMES:
        got, ref = np.asarray(result[name], np.float64), np.asarray(reference[name], np.float64)
        if got.shape != ref.shape:
            raise ValueError(f"{name}: result shape {got.shape} != reference shape {ref.shape}")
        scale = float(np.abs(ref).max()) or 1.0
        err = np.abs(got - ref).reshape(got.shape[0], -1).max(axis=1)
        rows.append(
            ParamAgreement(
                param=name,
                max_abs_err=float(err.max()),
                max_rel_err=float(err.max() / scale),
                ref_max_abs=scale,
                bad_samples=np.flatnonzero(err / scale > tol).tolist(),
            )
        )
    return rows


def rows_to_json(rows: list[ParamAgreement]) -> list[dict]:
    return [asdict(r) for r in rows]


@dataclass
class AgreementReport:
    """Each framework's per-sample gradients (float32 and float64) against the float64 reference."""

    reference: str
    batch_size: int
    loss: str
    results: dict[str, list[ParamAgreement]]  # "torch/float32" -> rows
    tolerance: dict[str, float]

    @property
    def ok(self) -> bool:
        return all(not r.bad_samples for rows in self.results.values() for r in rows)

    def to_json(self) -> dict:
        return {
            "reference": self.reference,
            "batch_size": self.batch_size,
            "loss": self.loss,
            "tolerance": self.tolerance,
            "ok": self.ok,
            "results": {k: rows_to_json(v) for k, v in self.results.items()},
        }

    def format_table(self) -> str:
        lines = [f"per-sample gradients vs {self.reference} (B={self.batch_size}, loss={self.loss})",
                 f"{'result':<15} {'param':<13} {'max abs err':>12} {'max rel err':>12} {'tol':>8}  samples out of tol"]
        for key, rows in self.results.items():
            tol = self.tolerance[key.split("/")[1]]
            for r in rows:
                lines.append(f"{key:<15} {r.param:<13} {r.max_abs_err:12.3e} {r.max_rel_err:12.3e} {tol:8.0e}  "
                             f"{r.bad_samples[:8] if r.bad_samples else '-'}")
        return "\n".join(lines)


def run_agreement(
    weights: dict[str, np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    *,
    frameworks: tuple[str, ...] = ("torch", "jax"),
    method: str = "vmap",
    loss: str = "nll_log_softmax",
    device: str | None = None,
) -> AgreementReport:
    """Every framework in float32 and float64 against the first framework's float64 ``loop`` (the oracle)."""
    from compare.frameworks import per_sample_module

    ref_fw = frameworks[0]
    reference = per_sample_module(ref_fw).per_sample_grads(
        weights, x, y, method="loop", loss=loss, dtype="float64", device=device
    )
    results = {}
    for fw in frameworks:
        mod = per_sample_module(fw)
        for dtype in ("float64", "float32"):
            got = mod.per_sample_grads(weights, x, y, method=method, loss=loss, dtype=dtype, device=device)
            results[f"{fw}/{dtype}"] = compare_grads(got, reference, TOLERANCE[dtype])
    return AgreementReport(f"{ref_fw}/float64/loop", x.shape[0], loss, results, dict(TOLERANCE))
