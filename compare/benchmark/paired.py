"""Paired, interleaved ratios: a method and its baseline timed in the same process, round by round.

Why: two medians taken in two processes minutes apart on a shared machine are not a ratio; a load change
between them moves one side only (``paper/paired-demo`` measures it: ``sgd`` against itself with a CPU-bound
process started halfway). Protocol (``interleave``): after every target is compiled and warmed up, rounds of one
timed slot per target, the order shuffled per round (seeded); a slot is ``calls`` back-to-back calls (enough for
``ROUND_MS`` at the fastest warm-up call), its time the mean per call. A ratio (``paired_ratio``) is the median
of the per-round ratios, with a seeded percentile-bootstrap 95% interval over rounds. A goal's verdict (``verdict``) is ``met`` or
``missed`` only when the whole interval is on one side of the bound, else ``undecided``.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Literal

import numpy as np

N_BOOT = 2000
BOOT_SEED = 0
ROUND_MS = 20.0  # a slot lasts at least this long, so sub-millisecond steps are not timed one call at a time
WIDE = 0.10  # an interval reaching beyond +-10% of its median is flagged
Direction = Literal["at_most", "above"]
# (what the ratio compares) -> (bound, direction): the goals every verdict is read against.
GOALS: dict[str, tuple[float, Direction]] = {
    "private_over_sgd": (1.25, "at_most"),  # a private step <= 1.25x its own framework's sgd step
    "per_sample_over_floor": (1.15, "at_most"),  # the best per-sample method <= 1.15x its floor
    "peer_over_ours": (1.0, "above"),  # our best private step faster than the peer's: peer / ours > 1
}


@dataclass(frozen=True)
class Ratio:
    """The median per-round ratio num/den, its bootstrap 95% interval [lo, hi] and the rounds behind it."""

    median: float
    lo: float
    hi: float
    rounds: int

    def wide(self, width: float = WIDE) -> bool:
        return self.lo < self.median * (1 - width) or self.hi > self.median * (1 + width)

    def to_json(self) -> dict:
        return {"median": self.median, "ci95": [self.lo, self.hi], "rounds": self.rounds}

    def text(self) -> str:
        return f"{self.median:.2f}x [{self.lo:.2f}, {self.hi:.2f}]"


def paired_ratio(num_ms: list[float], den_ms: list[float], *, den_offset_ms: float = 0.0, seed: int = BOOT_SEED,
                 n_boot: int = N_BOOT) -> Ratio:
    """Median over rounds of num[i] / (den[i] + den_offset_ms) with a percentile-bootstrap 95% interval.

    ``den_offset_ms``: a constant added to every round's denominator (the floor's write time, derived from the
    measured bandwidth, is not a timed target)."""
    num, den = np.asarray(num_ms, float), np.asarray(den_ms, float) + den_offset_ms
    if num.shape != den.shape or num.ndim != 1 or num.size == 0:
        raise ValueError(f"need two equally long, non-empty round series; got {num.shape} and {den.shape}")
    r = num / den
    idx = np.random.default_rng(seed).integers(0, r.size, size=(n_boot, r.size))
    lo, hi = np.percentile(np.median(r[idx], axis=1), [2.5, 97.5])
    return Ratio(float(np.median(r)), float(lo), float(hi), int(r.size))


def verdict(ratio: Ratio, bound: float, direction: Direction = "at_most") -> str:
    """``met`` / ``missed`` when the whole interval is on one side of ``bound``, ``undecided`` when it straddles.
    ``at_most``: the goal is ratio <= bound; ``above``: ratio > bound."""
    if direction == "at_most":
        return "met" if ratio.hi <= bound else "missed" if ratio.lo > bound else "undecided"
    if direction == "above":
        return "met" if ratio.lo > bound else "missed" if ratio.hi <= bound else "undecided"
    raise ValueError(f"unknown direction {direction!r}; expected 'at_most' or 'above'")


def goal_entry(ratio: Ratio, goal: str | None) -> dict:
    """A record's ratio entry: the ratio, and against ``GOALS[goal]`` its bound and verdict."""
    entry = ratio.to_json()
    if goal is not None:
        bound, direction = GOALS[goal]
        entry.update(goal=goal, bound=bound, direction=direction, verdict=verdict(ratio, bound, direction))
    return entry


def calls_per_slot(call_ms: float, round_ms: float = ROUND_MS) -> int:
    """Back-to-back calls that make one slot last about ``round_ms`` (one for anything slower)."""
    return max(1, math.ceil(round_ms / max(call_ms, 1e-6)))


@dataclass
class Interleaved:
    """Every round's time per target (ms per call), the order of each round, and the load seen."""

    rounds_ms: dict[str, list[float]]
    calls: dict[str, int]
    orders: list[list[str]]
    loadavg_max: float
    cores: int


def interleave(targets: dict[str, Callable[[], Any]], calls: dict[str, int], *, rounds: int, min_seconds: float,
               seed: int = 0, max_rounds: int = 10_000,
               before_round: Callable[[int], None] | None = None) -> Interleaved:
    """Time ``targets`` (each ``slot()`` = one synchronised call, already warmed up) in interleaved rounds.

    At least ``rounds`` rounds, and more until every target has ``min_seconds`` of timed calls. Each round times
    every target once (``calls[name]`` back-to-back calls), in an order shuffled per round (seeded).
    ``before_round(i)``: called untimed before round i (``scripts/paired_demo.py`` starts its load there)."""
    if rounds < 2 or min_seconds < 0 or not targets:
        raise ValueError(f"need rounds >= 2, min_seconds >= 0 and a target; got {rounds}, {min_seconds}, "
                         f"{list(targets)}")
    rng = np.random.default_rng(seed)
    names = list(targets)
    out: dict[str, list[float]] = {n: [] for n in names}
    spent = dict.fromkeys(names, 0.0)
    orders, load = [], os.getloadavg()[0]
    while len(orders) < max_rounds and (len(orders) < rounds or min(spent.values()) < min_seconds * 1e3):
        if before_round is not None:
            before_round(len(orders))
        order = [names[i] for i in rng.permutation(len(names))]
        for name in order:
            fn, k = targets[name], calls[name]
            t0 = time.perf_counter()
            for _ in range(k):
                fn()
            ms = (time.perf_counter() - t0) * 1e3
            out[name].append(ms / k)
            spent[name] += ms
        orders.append(order)
        load = max(load, os.getloadavg()[0])
    return Interleaved(out, dict(calls), orders, load, len(os.sched_getaffinity(0)))


def warnings_for(ratios: dict[str, Ratio], loadavg_max: float | None, cores: int | None) -> list[str]:
    """One line per reason not to trust a point's ratios: an interval wider than +-10%, a busy machine."""
    out = [f"ratio to {name} {r.text()}: interval wider than +-{WIDE:.0%}" for name, r in ratios.items()
           if r.wide()]
    if loadavg_max is not None and cores and loadavg_max > cores:
        out.append(f"load average {loadavg_max:.1f} exceeded the {cores} cores during the point")
    return out
