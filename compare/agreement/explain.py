"""Explain float32 per-sample gradients that miss the float64 reference: flipped decisions and decision replay.

The CNN is piecewise smooth. A float32 run whose rounding puts a ReLU pre-activation on the other side of 0,
or changes a 2x2 max-pool winner on a near-tie, differentiates a *different smooth piece* than float64 does,
and that sample's gradient jumps. For every float32 sample out of tolerance we list the decisions that differ
from float64 with their margins (in units of the rounding scale u*S, see ``compare.agreement.oracle.rounding_scales``)
and re-run the numpy float64 oracle with the framework's own float32 decisions forced. If the sample then
agrees to ``REPLAY_TOLERANCE`` it is explained (legitimate float32 sensitivity); otherwise it is a real
discrepancy and the report is not ok.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from compare.agreement import oracle
from compare.agreement.errors import ParamAgreement, compare_grads, sample_errors
from compare.frameworks import impl_module
from compare.spec import PARAM_NAMES

Arrays = dict[str, np.ndarray]
_ORACLE_CHUNK = 16  # samples per oracle call: bounds memory (the fc1 outer product is 9 MB per sample)


@dataclass
class DecisionPoint:
    """One decision of one sample: key (e.g. ``conv2.relu``), index (channel[, h, w]; pool: 12x12 window)."""

    decision: str
    sample: int
    index: tuple[int, ...]
    margin: float  # distance from flipping in float64, in units of u*S
    float64: int = -1  # gate (0/1) or winner (0..3) in float64; -1 for a pre-flag
    float32: int = -1

    def describe(self) -> str:
        where = ",".join(f"{n}={i}" for n, i in zip(("c", "h", "w"), self.index))
        change = f" {self.float64}->{self.float32}" if self.float32 >= 0 else ""
        return f"sample {self.sample} {self.decision}[{where}]{change} margin {self.margin:.2g} u*S"

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
    """The float64 oracle's decisions for the whole batch, their margins, and the pre-flagged near-kinks."""

    decisions: Arrays
    margins: Arrays
    near: list[DecisionPoint]

    @classmethod
    def compute(cls, weights: Arrays, x: np.ndarray, threshold: float) -> Float64Decisions:
        cache = oracle.forward(weights, x)
        margins = oracle.decision_margins(weights, cache)
        near = [DecisionPoint(k, idx[0], idx[1:], m) for k, idx, m in oracle.near_kinks(cache, margins, threshold)]
        return cls({k: cache[k] for k in oracle.DECISION_SHAPES}, margins, near)


def check_oracle(weights: Arrays, x: np.ndarray, y: np.ndarray, loss: str, reference: Arrays,
                 scales: dict[str, float], tol: float) -> list[ParamAgreement]:
    """The numpy oracle (unforced) against the reference: a third, framework-independent float64 check."""
    chunks = [oracle.per_sample_grads(weights, x[i:i + _ORACLE_CHUNK], y[i:i + _ORACLE_CHUNK], loss=loss)
              for i in range(0, x.shape[0], _ORACLE_CHUNK)]
    got = {k: np.concatenate([c[k] for c in chunks]) for k in PARAM_NAMES}
    return compare_grads(got, reference, tol, scales)


def framework_decisions(framework: str, method: str, weights: Arrays, x: np.ndarray, device: str | None) -> Arrays:
    """The framework's float32 decisions as its ``method`` computes them (``loop`` runs one example at a time)."""
    fn = impl_module(framework, "decisions").forward_decisions
    if method != "loop":
        return fn(weights, x, dtype="float32", device=device)
    parts = [fn(weights, x[i:i + 1], dtype="float32", device=device) for i in range(x.shape[0])]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def find_flips(d32: Arrays, f64: Float64Decisions, sample: int) -> list[DecisionPoint]:
    """Decisions of ``sample`` where float32 differs from float64 and the gradient can notice
    (conv2 gates only at a pool winner of either precision), smallest margin first."""
    winners = [d["pool.winner"][sample:sample + 1] for d in (d32, f64.decisions)]
    at_winner = (oracle.winner_mask(winners[0]) | oracle.winner_mask(winners[1]))[0]
    flips = []
    for key in oracle.DECISION_SHAPES:
        a, b = f64.decisions[key][sample], d32[key][sample]
        differs = (a != b) & at_winner if key == "conv2.relu" else a != b
        for idx in zip(*np.nonzero(differs)):
            margin = f64.margins[key][sample][idx + ((int(b[idx]),) if key == "pool.winner" else ())]
            flips.append(DecisionPoint(key, sample, tuple(int(i) for i in idx), float(margin),
                                       int(a[idx]), int(b[idx])))
    return sorted(flips, key=lambda f: f.margin)


def replay_errors(weights: Arrays, x: np.ndarray, y: np.ndarray, loss: str, got32: Arrays, d32: Arrays,
                  samples: list[int], scales: dict[str, float]) -> np.ndarray:
    """(len(samples),) max over parameters of |float32 - replay| / reference scale."""
    forced = {k: d32[k][samples] for k in oracle.DECISION_SHAPES}
    replay = oracle.per_sample_grads(weights, x[samples], y[samples], loss=loss, forced=forced)
    errs = sample_errors({k: got32[k][samples] for k in PARAM_NAMES}, replay)
    return np.max([errs[k] / scales[k] for k in PARAM_NAMES], axis=0)


def explain_samples(
    framework: str, method: str, weights: Arrays, x: np.ndarray, y: np.ndarray, loss: str, got32: Arrays,
    rel_err: Arrays, tol: float, f64: Float64Decisions, scales: dict[str, float], replay_tol: float,
    device: str | None,
) -> tuple[list[int], list[SampleExplanation]]:
    """(samples with any gradient-relevant flip, one explanation per sample out of ``tol``).

    ``rel_err``: ``{name: (B,)}`` each sample's max error against the reference over the parameter's scale.
    """
    d32 = framework_decisions(framework, method, weights, x, device)
    flipped = [s for s in range(x.shape[0]) if find_flips(d32, f64, s)]
    bad = sorted({int(s) for e in rel_err.values() for s in np.flatnonzero(e > tol)})
    if not bad:
        return flipped, []
    replay = replay_errors(weights, x, y, loss, got32, d32, bad, scales)
    explanations = [
        SampleExplanation(
            sample=s,
            params=[k for k in PARAM_NAMES if rel_err[k][s] > tol],
            max_rel_err=float(max(rel_err[k][s] for k in PARAM_NAMES)),
            replay_rel_err=float(r),
            explained=bool(r <= replay_tol),
            flips=find_flips(d32, f64, s),
        )
        for s, r in zip(bad, replay)
    ]
    return flipped, explanations
