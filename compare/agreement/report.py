"""Per-parameter agreement of per-sample gradients against the float64 reference, with explanations.

For each (framework, dtype) result and each parameter: max abs error, that error relative to the
reference's max |value|, and the samples out of tolerance. A float32 sample out of tolerance is then
*explained* or not by ``compare.agreement.explain``: the non-smooth decisions (ReLU gates, max-pool winners) that
float32 flipped, their margins in units of the rounding scale, and a decision-replay oracle run.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from compare.agreement import explain
from compare.agreement.errors import (
    NEAR_KINK, REPLAY_TOLERANCE, TOLERANCE, ParamAgreement, bad_samples, compare_grads, reference_scales,
    rows_from_errors, sample_errors,
)
from compare.frameworks import per_sample_module
from compare.spec import check_batch, check_loss

@dataclass
class AgreementReport:
    """Each framework's per-sample gradients (float32 and float64) against the float64 reference.

    ``cross`` compares the frameworks directly (its float32 rows inform only: each framework is judged
    against the reference, where a flip is explained or not); ``oracle`` checks the numpy oracle against it;
    ``explanations[key]`` has one entry per float32 sample out of tolerance (see ``compare.agreement.explain``).
    """

    reference: str
    batch_size: int
    loss: str
    results: dict[str, list[ParamAgreement]]  # "torch/float32" -> rows
    tolerance: dict[str, float]
    cross: dict[str, list[ParamAgreement]] = field(default_factory=dict)  # "torch/float32 vs jax/float32"
    oracle: list[ParamAgreement] = field(default_factory=list)
    explanations: dict[str, list] = field(default_factory=dict)
    near_kinks: list = field(default_factory=list)
    flipped_samples: dict[str, list[int]] = field(default_factory=dict)
    smooth_max_rel_err: dict[str, float] = field(default_factory=dict)  # float32, samples with no flip

    def unexplained(self) -> dict[str, list[int]]:
        """Out-of-tolerance samples that no flipped decision explains (all of them for float64)."""
        out = {}
        for key, rows in self.results.items():
            explained = {e.sample for e in self.explanations.get(key, []) if e.explained}
            left = [s for s in bad_samples(rows) if s not in explained]
            if left:
                out[key] = left
        if bad_samples(self.oracle):
            out["oracle/float64"] = bad_samples(self.oracle)
        for key, rows in self.cross.items():
            if key.endswith("float64") and bad_samples(rows):
                out[key] = bad_samples(rows)
        return out

    @property
    def ok(self) -> bool:
        return not self.unexplained()

    def to_json(self) -> dict:
        return {
            "reference": self.reference,
            "batch_size": self.batch_size,
            "loss": self.loss,
            "tolerance": {**self.tolerance, "replay": REPLAY_TOLERANCE, "near_kink_u_s": NEAR_KINK},
            "ok": self.ok,
            "results": {k: [asdict(r) for r in v] for k, v in self.results.items()},
            "cross": {k: [asdict(r) for r in v] for k, v in self.cross.items()},
            "oracle": [asdict(r) for r in self.oracle],
            "explanations": {k: [e.to_json() for e in v] for k, v in self.explanations.items()},
            "near_kinks": [k.to_json() for k in self.near_kinks],
            "flipped_samples": self.flipped_samples,
            "smooth_max_rel_err": self.smooth_max_rel_err,
            "unexplained": self.unexplained(),
        }

    def format_table(self) -> str:
        lines = [f"per-sample gradients vs {self.reference} (B={self.batch_size}, loss={self.loss})",
                 f"{'result':<28} {'param':<13} {'max abs err':>12} {'max rel err':>12} {'tol':>8}  out of tol"]
        tables = {**self.results, **self.cross, "oracle/float64 (numpy)": self.oracle}
        for key, rows in tables.items():
            tol = self.tolerance["float64" if "float64" in key else "float32"]
            for r in rows:
                lines.append(f"{key:<28} {r.param:<13} {r.max_abs_err:12.3e} {r.max_rel_err:12.3e} {tol:8.0e}  "
                             f"{r.bad_samples[:8] if r.bad_samples else '-'}")
        for key, explanations in self.explanations.items():
            lines.append(f"{key}: {len(self.flipped_samples[key])} samples with a flipped decision; max rel err "
                         f"of the others {self.smooth_max_rel_err[key]:.2e} (tolerance {self.tolerance['float32']:.0e})")
            lines.extend(f"{key}: {e.describe()}" for e in explanations)
        lines.extend(f"float64 near a kink: {k.describe()}" for k in self.near_kinks)
        lines.append("OK: every disagreement is explained" if self.ok else f"NOT OK, unexplained: {self.unexplained()}")
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
    """Every framework in float32 and float64 against the first framework's float64 ``loop`` (the reference);
    float32 samples out of tolerance are explained by decision replay (``compare.agreement.explain``)."""
    check_batch(x, y)
    check_loss(loss)
    if not frameworks:
        raise ValueError("run_agreement needs at least one framework")
    ref_fw = frameworks[0]
    reference = per_sample_module(ref_fw).per_sample_grads(
        weights, x, y, method="loop", loss=loss, dtype="float64", device=device)
    scales = reference_scales(reference)
    report = AgreementReport(f"{ref_fw}/float64/loop", x.shape[0], loss, {}, dict(TOLERANCE))
    report.oracle = explain.check_oracle(weights, x, y, loss, reference, scales, TOLERANCE["float64"])
    float64 = explain.Float64Decisions.compute(weights, x, NEAR_KINK)
    report.near_kinks = float64.near
    for dtype in ("float64", "float32"):
        previous: tuple[str, dict[str, np.ndarray]] | None = None
        for fw in frameworks:
            key = f"{fw}/{dtype}"
            got = per_sample_module(fw).per_sample_grads(
                weights, x, y, method=method, loss=loss, dtype=dtype, device=device)
            errs = sample_errors(got, reference)
            report.results[key] = rows_from_errors(errs, scales, TOLERANCE[dtype])
            if dtype == "float32":
                rel = {k: e / scales[k] for k, e in errs.items()}
                report.flipped_samples[key], report.explanations[key] = explain.explain_samples(
                    fw, method, weights, x, y, loss, got, rel, TOLERANCE[dtype], float64, scales,
                    REPLAY_TOLERANCE, device)
                smooth = np.setdiff1d(np.arange(x.shape[0]), report.flipped_samples[key])
                report.smooth_max_rel_err[key] = float(max(r[smooth].max(initial=0.0) for r in rel.values()))
            if previous is not None:  # torch vs jax directly, relative to the same reference scales
                report.cross[f"{previous[0]} vs {key}"] = compare_grads(got, previous[1], TOLERANCE[dtype], scales)
            previous = (key, got)
    return report
