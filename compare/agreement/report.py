"""Per-parameter agreement of per-sample gradients against the float64 reference, with explanations.

For each (framework, dtype) result and each parameter: max abs error, that error relative to the
reference's max |value|, and the samples out of tolerance. A float32 sample out of tolerance is then
*explained* or not by ``compare.agreement.explain``: the non-smooth decisions (ReLU gates, max-pool winners) that
float32 flipped, their margins in units of the rounding scale, and a decision-replay run. Per workload
(``model=``): every applicable method of both frameworks is also checked in float64 against its own loop.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from compare.agreement import explain
from compare.agreement.errors import (
    NEAR_KINK, REPLAY_TOLERANCE, TOLERANCE, ParamAgreement, bad_samples, compare_grads, reference_scales,
    rows_from_errors, sample_errors,
)
from compare.frameworks import side
from compare.spec import DEFAULT_MODEL, MethodError, check_batch, check_loss, check_model


@dataclass
class AgreementReport:
    """One workload's per-sample gradients, both frameworks, against the float64 reference.

    ``results``: each framework's ``method`` in float32 and float64 against the reference (the first
    framework's float64 ``loop``). ``methods``: every applicable method of each framework in float64 against
    that framework's own float64 loop (``"jax/float64/per_layer"``); ``not_applicable``: the methods that do not
    apply to this workload here, with the reason (``applicable_methods``), and those not run (``methods=``).
    ``cross`` compares the frameworks directly (float64 rows must pass; float32 rows inform only: each
    framework is judged against the reference, where a flip is explained or not); ``oracle`` checks the numpy
    oracle against it (workloads with one: ``explain.ORACLES``); ``explanations[key]`` has one entry per float32 sample out of tolerance
    (see ``compare.agreement.explain``); ``decision_sites``: the workload's ReLU / max-pool sites (empty: its
    float32 error is rounding only).
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
    model: str = DEFAULT_MODEL
    methods: dict[str, list[ParamAgreement]] = field(default_factory=dict)  # "torch/float64/vmap" vs its loop
    not_applicable: dict[str, str] = field(default_factory=dict)  # "jax/vmap_patches" -> reason
    decision_sites: list[str] = field(default_factory=list)

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
        for key, rows in {**self.methods, **self.cross}.items():
            if "float64" in key and bad_samples(rows):
                out[key] = bad_samples(rows)
        return out

    @property
    def ok(self) -> bool:
        return not self.unexplained()

    def float64_max_rel_err(self) -> dict[str, float]:
        """Largest float64 relative error of each result / method / cross row set (the numbers to quote)."""
        rows = {**{k: v for k, v in self.results.items() if "float64" in k}, **self.methods,
                **{k: v for k, v in self.cross.items() if "float64" in k}}
        if self.oracle:
            rows["oracle/float64"] = self.oracle
        return {k: max((r.max_rel_err for r in v), default=0.0) for k, v in rows.items()}

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "reference": self.reference,
            "batch_size": self.batch_size,
            "loss": self.loss,
            "tolerance": {**self.tolerance, "replay": REPLAY_TOLERANCE, "near_kink_u_s": NEAR_KINK},
            "ok": self.ok,
            "results": {k: [asdict(r) for r in v] for k, v in self.results.items()},
            "methods": {k: [asdict(r) for r in v] for k, v in self.methods.items()},
            "not_applicable": self.not_applicable,
            "cross": {k: [asdict(r) for r in v] for k, v in self.cross.items()},
            "oracle": [asdict(r) for r in self.oracle],
            "decision_sites": self.decision_sites,
            "explanations": {k: [e.to_json() for e in v] for k, v in self.explanations.items()},
            "near_kinks": [k.to_json() for k in self.near_kinks],
            "flipped_samples": self.flipped_samples,
            "smooth_max_rel_err": self.smooth_max_rel_err,
            "float64_max_rel_err": self.float64_max_rel_err(),
            "unexplained": self.unexplained(),
        }

    def format_table(self) -> str:
        lines = [f"model {self.model}: per-sample gradients vs {self.reference} (B={self.batch_size}, "
                 f"loss={self.loss})",
                 f"{'result':<36} {'param':<16} {'max abs err':>12} {'max rel err':>12} {'tol':>8}  out of tol"]
        tables = {**self.results, **self.methods, **self.cross}
        if self.oracle:
            tables["oracle/float64 (numpy)"] = self.oracle
        for key, rows in tables.items():
            tol = self.tolerance["float64" if "float64" in key else "float32"]
            for r in rows:
                lines.append(f"{key:<36} {r.param:<16} {r.max_abs_err:12.3e} {r.max_rel_err:12.3e} {tol:8.0e}  "
                             f"{r.bad_samples[:8] if r.bad_samples else '-'}")
        lines.extend(f"{key}: {why}" if why.startswith("not") else f"{key}: not applicable: {why}"
                     for key, why in self.not_applicable.items())
        sites = ", ".join(self.decision_sites) if self.decision_sites else (
            f"none (no ReLU or max-pool): float32 differences are rounding only, bound "
            f"{self.tolerance['float32']:.0e} relative")
        lines.append(f"decision sites: {sites}")
        for key, explanations in self.explanations.items():
            lines.append(f"{key}: {len(self.flipped_samples[key])} samples with a flipped decision; max rel err "
                         f"of the others {self.smooth_max_rel_err[key]:.2e} (tolerance {self.tolerance['float32']:.0e})")
            lines.extend(f"{key}: {e.describe()}" for e in explanations)
        lines.extend(f"float64 near a kink: {k.describe()}" for k in self.near_kinks)
        lines.append("OK: every disagreement is explained" if self.ok else f"NOT OK, unexplained: {self.unexplained()}")
        return "\n".join(lines)


def _float64_methods(report: AgreementReport, fw: str, weights, x, y, *, loss: str, device: str | None,
                     model: str, loop: dict[str, np.ndarray], methods: tuple[str, ...] | None,
                     cache: dict[tuple[str, str], dict[str, np.ndarray]], keep: str) -> None:
    """Every method of ``fw`` in float64 against ``fw``'s own float64 loop (1e-10); the others listed with why.
    Only the ``keep`` method's result is cached (for the cross-framework comparison): each result is B x |params|
    float64 (2.1 GB for the transformer at B = 64), and keeping every method's ran a 24 GB machine out of memory."""
    ps = side(fw)
    scales = reference_scales(loop)
    costly = ps.not_run_by_default(model) if methods is None else {}  # left out of the default list, with why
    for m, reason in ps.applicable_methods(model).items():
        if m == "loop":
            continue
        key = f"{fw}/{m}"
        if reason is not None:
            report.not_applicable[key] = reason
        elif methods is not None and m not in methods:
            report.not_applicable[key] = f"not run: not in methods={tuple(methods)}"
        elif m in costly:
            report.not_applicable[key] = costly[m]
        else:
            try:
                got = ps.per_sample_grads(weights, x, y, method=m, loss=loss, dtype="float64", device=device,
                                          model=model)
            except MethodError as err:  # e.g. torch.compile failing on this platform: not a disagreement
                report.not_applicable[key] = f"could not run here: {err}"
                continue
            report.methods[f"{fw}/float64/{m}"] = compare_grads(got, loop, TOLERANCE["float64"], scales)
            if m == keep:
                cache[(fw, m)] = got
            del got


def run_agreement(
    weights: dict[str, np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    *,
    frameworks: tuple[str, ...] = ("torch", "jax"),
    method: str = "vmap",
    loss: str = "nll_log_softmax",
    device: str | None = None,
    model: str = DEFAULT_MODEL,
    methods: tuple[str, ...] | None = None,
) -> AgreementReport:
    """The agreement check of one workload (``model``, a ``compare.spec.MODELS`` name; unknown: InputError).

    - float64, every applicable method of each framework against that framework's float64 ``loop``, and each
      framework against the first one's float64 ``loop`` (the reference) and directly (loop vs loop, ``method``
      vs ``method``): all within ``TOLERANCE["float64"]`` = 1e-10 relative to each parameter's max |reference|
      (measured <= ~2e-15 on every workload). ``methods`` limits which methods run (default: every applicable
      one); a method not applicable or not run is listed in ``not_applicable`` with the reason, never dropped.
    - float32, each framework's ``method`` against the reference at ``TOLERANCE["float32"]`` = 1e-4; every
      sample beyond it is explained, or not, by decision replay (``compare.agreement.explain``, which says what
      that means per workload) to ``REPLAY_TOLERANCE`` = 1e-5.
    - a workload with an independent numpy oracle (``explain.ORACLES``: the seed CNN's) is also checked against it.
    """
    name = check_model(model).name
    check_batch(x, y, name)
    check_loss(loss)
    if not frameworks:
        raise ValueError("run_agreement needs at least one framework")
    ref_fw = frameworks[0]
    reference = side(ref_fw).per_sample_grads(
        weights, x, y, method="loop", loss=loss, dtype="float64", device=device, model=name)
    scales = reference_scales(reference)
    report = AgreementReport(f"{ref_fw}/float64/loop", x.shape[0], loss, {}, dict(TOLERANCE), model=name)
    if explain.has_oracle(name):
        report.oracle = explain.check_oracle(weights, x, y, loss, reference, scales, TOLERANCE["float64"], model=name)
    float64 = explain.Float64Decisions.compute(weights, x, NEAR_KINK, framework=ref_fw, device=device, model=name)
    report.near_kinks = float64.near
    report.decision_sites = [s.key for s in float64.sites]
    cache: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    loops: dict[str, dict[str, np.ndarray]] = {}
    for fw in frameworks:
        loops[fw] = reference if fw == ref_fw else side(fw).per_sample_grads(
            weights, x, y, method="loop", loss=loss, dtype="float64", device=device, model=name)
        _float64_methods(report, fw, weights, x, y, loss=loss, device=device, model=name, loop=loops[fw],
                         methods=methods, cache=cache, keep=method)
    for fw in frameworks[1:]:
        report.cross[f"{ref_fw}/float64/loop vs {fw}/float64/loop"] = compare_grads(
            loops[fw], reference, TOLERANCE["float64"], scales)
    for dtype in ("float64", "float32"):
        previous: tuple[str, dict[str, np.ndarray]] | None = None
        for fw in frameworks:
            key = f"{fw}/{dtype}"
            got = cache.get((fw, method)) if dtype == "float64" else None
            if got is None:
                got = side(fw).per_sample_grads(
                    weights, x, y, method=method, loss=loss, dtype=dtype, device=device, model=name)
            errs = sample_errors(got, reference)
            report.results[key] = rows_from_errors(errs, scales, TOLERANCE[dtype])
            if dtype == "float32":
                rel = {k: e / scales[k] for k, e in errs.items()}
                report.flipped_samples[key], report.explanations[key] = explain.explain_samples(
                    fw, method, weights, x, y, loss, got, rel, TOLERANCE[dtype], float64, scales,
                    REPLAY_TOLERANCE, device, model=name, replay_framework=ref_fw)
                smooth = np.setdiff1d(np.arange(x.shape[0]), report.flipped_samples[key])
                report.smooth_max_rel_err[key] = float(max(r[smooth].max(initial=0.0) for r in rel.values()))
            if previous is not None:  # torch vs jax directly, relative to the same reference scales
                report.cross[f"{previous[0]} vs {key}"] = compare_grads(got, previous[1], TOLERANCE[dtype], scales)
            previous = (key, got)
    return report
