"""Explain float32 per-sample gradients that miss the float64 reference: flipped decisions and decision replay.

The networks are piecewise smooth. A float32 run whose rounding puts a ReLU pre-activation on the other side
of 0, or changes a max-pool winner on a near-tie, differentiates a *different smooth piece* than float64 does,
and that sample's gradient jumps. For every float32 sample out of tolerance we list the decisions that differ
from float64 with their margins (in units of the rounding scale u*S, ``compare.agreement.sites``) and re-run
a float64 gradient with the framework's own float32 decisions forced (the replay). If the sample then agrees
to ``REPLAY_TOLERANCE`` it is explained (legitimate float32 sensitivity); otherwise it is a real discrepancy
and the report is not ok.

Per workload (sites found from the model by each side's ``decisions``, nothing here names a layer or a workload):
- the sites are the workload's ReLU gates and max-pool winners (e.g. mnist_cnn: conv1, conv2, fc1 and two
  overlapping 2x2/1 max-pools; cifar10_cnn: the ReLUs of conv1..conv7, its average pools decide nothing);
- the replay is an independent numpy oracle where ``ORACLES`` has one for the workload (the seed CNN's,
  ``compare.agreement.seed_oracle``, independent of both frameworks), else the reference framework's float64
  autodiff through the forced piece (each side's ``decisions.replay_grads``; checked equal to the numpy oracle
  on the seed CNN and to each framework's float64 loop when the float64 decisions are forced);
- a workload with no ReLU and no max-pool (logreg, embed) has no decision: its float32 gradient is a smooth
  function of the inputs, its error is rounding only and must stay within ``TOLERANCE["float32"]`` (1e-4
  relative, see ``compare.agreement.errors``); a sample beyond it cannot be explained and the report is not ok.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from types import ModuleType

import numpy as np

from compare.agreement import seed_oracle
from compare.agreement import sites as S
from compare.agreement.errors import ParamAgreement, compare_grads, sample_errors
from compare.frameworks import side
from compare.spec import DEFAULT_MODEL, check_model

Arrays = dict[str, np.ndarray]
# Independent numpy oracles by workload: ``per_sample_grads(weights, x, y, loss=, forced=)`` of that workload
# alone. A workload listed here gets a third, framework-free float64 check and a framework-free replay.
ORACLES: dict[str, ModuleType] = {seed_oracle.WORKLOAD: seed_oracle}
_ORACLE_CHUNK = 16  # samples per oracle call: bounds memory (the seed oracle's fc1 outer product is 9 MB a sample)


def has_oracle(model: str) -> bool:
    """Whether ``ORACLES`` holds a numpy oracle for the workload ``model``."""
    return check_model(model).name in ORACLES


@dataclass
class DecisionPoint:
    """One decision of one sample: key (e.g. ``conv2.relu``), index (channel[, h, w]; pool: its output window)."""

    decision: str
    sample: int
    index: tuple[int, ...]
    margin: float  # distance from flipping in float64, in units of u*S
    float64: int = -1  # gate (0/1) or winner (0..kh*kw-1) in float64; -1 for a pre-flag
    float32: int = -1

    def describe(self) -> str:
        where = ",".join(f"{n}={i}" for n, i in zip(("c", "h", "w"), self.index))
        change = f" {self.float64}->{self.float32}" if self.float32 >= 0 else ""
        margin = (f"margin {self.margin:.2g} u*S" if self.margin == self.margin else
                  "margin unknown (the gated layer is no dot product: no rounding scale S)")
        return f"sample {self.sample} {self.decision}[{where}]{change} {margin}"

    def to_json(self) -> dict:
        return {**asdict(self), "index": list(self.index)}


@dataclass
class SampleExplanation:
    sample: int
    params: list[str]  # parameters out of tolerance against the reference
    max_rel_err: float  # against the float64 reference
    replay_rel_err: float  # against the oracle with this framework's float32 decisions forced
    explained: bool
    flips: list[DecisionPoint]

    def describe(self) -> str:
        kinks = "; ".join(f.describe() for f in self.flips[:4]) or "no decision flipped"
        verdict = "explained (float32 kink sensitivity)" if self.explained else "NOT explained"
        return (f"sample {self.sample}: {','.join(self.params)} off by {self.max_rel_err:.2e}; {kinks}"
                f"{' ...' if len(self.flips) > 4 else ''}; replay {self.replay_rel_err:.2e} -> {verdict}")

    def to_json(self) -> dict:
        return {**asdict(self), "flips": [f.to_json() for f in self.flips]}


@dataclass
class Float64Decisions:
    """The float64 decisions of the whole batch (by the reference framework), their margins, and the
    pre-flagged near-kinks (``compare.agreement.sites``)."""

    sites: list
    decisions: Arrays
    margins: Arrays
    near: list[DecisionPoint]

    @classmethod
    def compute(cls, weights: Arrays, x: np.ndarray, threshold: float, *, framework: str = "torch",
                device: str | None = None, model: str = DEFAULT_MODEL) -> Float64Decisions:
        mod = side(framework)
        sites = mod.decision_sites(model)
        d = mod.forward_decisions(weights, x, dtype="float64", device=device, model=model, scales=True)
        margins = S.decision_margins(sites, d)
        near = [DecisionPoint(k, idx[0], idx[1:], m) for k, idx, m in S.near_kinks(sites, d, margins, threshold)]
        return cls(sites, d, margins, near)


def check_oracle(weights: Arrays, x: np.ndarray, y: np.ndarray, loss: str, reference: Arrays,
                 scales: dict[str, float], tol: float, *, model: str = DEFAULT_MODEL) -> list[ParamAgreement]:
    """The workload's numpy oracle (unforced; ``ORACLES``) against the reference: a third, framework-independent
    float64 check."""
    oracle = ORACLES[check_model(model).name]
    chunks = [oracle.per_sample_grads(weights, x[i:i + _ORACLE_CHUNK], y[i:i + _ORACLE_CHUNK], loss=loss)
              for i in range(0, x.shape[0], _ORACLE_CHUNK)]
    got = {k: np.concatenate([c[k] for c in chunks]) for k in check_model(model).param_names}
    return compare_grads(got, reference, tol, scales)


def framework_decisions(framework: str, method: str, weights: Arrays, x: np.ndarray, device: str | None,
                        model: str = DEFAULT_MODEL) -> Arrays:
    """The framework's float32 decisions as its ``method`` computes them (``loop`` runs one example at a time)."""
    fn = side(framework).forward_decisions
    if method != "loop":
        return fn(weights, x, dtype="float32", device=device, model=model)
    parts = [fn(weights, x[i:i + 1], dtype="float32", device=device, model=model) for i in range(x.shape[0])]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def find_flips(d32: Arrays, f64: Float64Decisions, sample: int) -> list[DecisionPoint]:
    """Decisions of ``sample`` where float32 differs from float64 and the gradient can notice
    (a gate read by a max-pool only at a winner of either precision), smallest margin first."""
    return [DecisionPoint(k, sample, idx, m, a, b)
            for k, idx, m, a, b in S.find_flips(f64.sites, d32, f64.decisions, f64.margins, sample)]


def replay_grads(weights: Arrays, x: np.ndarray, y: np.ndarray, loss: str, forced: Arrays, *, model: str,
                 framework: str, device: str | None) -> Arrays:
    """float64 gradients with ``forced`` decisions: the workload's numpy oracle where ``ORACLES`` has one
    (framework-independent), else ``framework``'s ``decisions.replay_grads`` (its float64 autodiff through the
    forced piece)."""
    if has_oracle(model):
        return ORACLES[check_model(model).name].per_sample_grads(weights, x, y, loss=loss, forced=forced)
    return side(framework).replay_grads(weights, x, y, forced, loss=loss, device=device, model=model)


def replay_errors(weights: Arrays, x: np.ndarray, y: np.ndarray, loss: str, got32: Arrays, d32: Arrays,
                  samples: list[int], scales: dict[str, float], f64: Float64Decisions, *, model: str = DEFAULT_MODEL,
                  framework: str = "torch", device: str | None = None) -> np.ndarray:
    """(len(samples),) max over parameters of |float32 - replay| / reference scale."""
    forced = {s.key: d32[s.key][samples] for s in f64.sites}
    replay = replay_grads(weights, x[samples], y[samples], loss, forced, model=model, framework=framework,
                          device=device)
    errs = sample_errors({k: got32[k][samples] for k in replay}, replay)
    return np.max([errs[k] / scales[k] for k in replay], axis=0)


def explain_samples(
    framework: str, method: str, weights: Arrays, x: np.ndarray, y: np.ndarray, loss: str, got32: Arrays,
    rel_err: Arrays, tol: float, f64: Float64Decisions, scales: dict[str, float], replay_tol: float,
    device: str | None, *, model: str = DEFAULT_MODEL, replay_framework: str = "torch",
) -> tuple[list[int], list[SampleExplanation]]:
    """(samples with any gradient-relevant flip, one explanation per sample out of ``tol``).

    ``rel_err``: ``{name: (B,)}`` each sample's max error against the reference over the parameter's scale.
    A workload without decision sites (logreg, embed) has no flip and no replay: its float32 error is rounding
    only, and a sample out of ``tol`` is reported unexplained (``replay_rel_err`` = its own error).
    """
    names = list(rel_err)
    bad = sorted({int(s) for e in rel_err.values() for s in np.flatnonzero(e > tol)})
    if not f64.sites:
        return [], [SampleExplanation(s, [k for k in names if rel_err[k][s] > tol],
                                      float(max(rel_err[k][s] for k in names)),
                                      float(max(rel_err[k][s] for k in names)), False, []) for s in bad]
    d32 = framework_decisions(framework, method, weights, x, device, model)
    flipped = [s for s in range(x.shape[0]) if find_flips(d32, f64, s)]
    if not bad:
        return flipped, []
    replay = replay_errors(weights, x, y, loss, got32, d32, bad, scales, f64, model=model,
                           framework=replay_framework, device=device)
    explanations = [
        SampleExplanation(
            sample=s,
            params=[k for k in names if rel_err[k][s] > tol],
            max_rel_err=float(max(rel_err[k][s] for k in names)),
            replay_rel_err=float(r),
            explained=bool(r <= replay_tol),
            flips=find_flips(d32, f64, s),
        )
        for s, r in zip(bad, replay)
    ]
    return flipped, explanations
