"""The answer at the end of ``compare.run``: a short verdict block, read from the results alone.

Do the frameworks agree (the agreement report's ``ok``); which is faster at per-sample gradients and by how
much, in words (each framework's best per-sample method, ``compare.benchmark.summary.best_per_sample``); each
framework's best private step as a multiple of its own SGD step (``summary.best_private``). Per workload, at
its largest batch size measured by both frameworks; with several batch sizes, how many of them each framework
won. ``COLUMNS_HELP`` explains the summary table's columns (``compare.run --help``, the README).
"""
from __future__ import annotations

from compare.benchmark.summary import best_per_sample, best_private, blocks

NAMES = {"torch": "torch", "jax": "JAX"}
SAME_WITHIN = 1.05  # ratios closer to 1 than this are "about as fast": below the noise of one run

COLUMNS_HELP = """\
The summary table, one block per (workload, batch size); each row is one point:
  median ms, IQR ms  median and interquartile range of the timed calls, milliseconds per batch
  x ref              time over the same framework's batched gradient (no per-sample): what per-sample costs
  vs loop            speed-up over the same framework's loop (one gradient per example); > 1 is faster
  torch/jax          torch's time over JAX's for the same method: < 1 means torch is faster, > 1 JAX
  x floor            time over the floor: the batched gradient + writing the per-sample output at the measured
                     memory bandwidth, the least a per-sample method can take; 1.0 is the floor
  peak MB            peak memory of the point above its process's memory after imports
  status             ok, or why there is no time (oom, timeout, error, skipped, not_applicable)
Each block ends with the best per-sample method of each framework (torch/jax of the two) and the DP overhead:
each private step's time over the same framework's non-private SGD step (x sgd). The output ends with a verdict.
"""


def faster_words(torch_ms: float, jax_ms: float) -> str:
    """``torch is 1.9x faster than JAX`` (or the other way round, or about the same)."""
    ratio = max(torch_ms, jax_ms) / min(torch_ms, jax_ms)
    if ratio < SAME_WITHIN:
        return f"torch and JAX are about as fast (within {SAME_WITHIN - 1:.0%})"
    fast, slow = ("torch", "JAX") if torch_ms < jax_ms else ("JAX", "torch")
    return f"{fast} is {ratio:.1f}x faster than {slow}"


def _agreement_line(agreement: dict | None) -> str:
    if agreement is None:
        return "not checked (--no-agreement)"
    by_model = agreement.get("by_model")
    if by_model is None:
        return ("yes: every method matches the float64 reference; every float32 difference is explained"
                if agreement.get("ok") else "NO: beyond tolerance and unexplained (see the agreement table above)")
    bad = [m for m, r in by_model.items() if not r.get("ok")]
    if not bad:
        return f"yes, on all {len(by_model)} workloads: every float32 difference is explained"
    return f"NO on {', '.join(bad)} (see their agreement tables above); yes on the other {len(by_model) - len(bad)}"


def _per_workload(timings: list[dict]) -> dict[str, dict[int, list[dict]]]:
    """model -> batch size -> records (float32 and float64 blocks alike; the run has one dtype)."""
    out: dict[str, dict[int, list[dict]]] = {}
    for (model, _dtype, _device, bsz), rows in blocks(timings).items():
        out.setdefault(model, {}).setdefault(bsz, []).extend(rows)
    return out


def _speed_line(model: str, by_b: dict[int, list[dict]]) -> str | None:
    both = {b: best for b, rows in by_b.items() if all((best := best_per_sample(rows)).values())}
    if not both:
        return None
    b = max(both)
    t, j = both[b]["torch"], both[b]["jax"]
    line = (f"{model} B={b}: {faster_words(t['median_ms'], j['median_ms'])} at per-sample gradients "
            f"(torch {t['method']} {t['median_ms']:.1f} ms, JAX {j['method']} {j['median_ms']:.1f} ms)")
    if len(both) > 1:
        torch_wins = sum(1 for best in both.values() if best["torch"]["median_ms"] < best["jax"]["median_ms"])
        line += f"; torch faster at {torch_wins} of {len(both)} batch sizes ({min(both)}..{max(both)})"
    return line


def _private_line(model: str, by_b: dict[int, list[dict]]) -> str | None:
    with_dp = {b: best for b, rows in by_b.items() if (best := best_private(rows))}
    if not with_dp:
        return None
    b = max(with_dp)
    parts = [f"{NAMES.get(fw, fw)} {rec['method']} {ratio:.2f}x its SGD step" for fw, (rec, ratio)
             in sorted(with_dp[b].items(), key=lambda kv: kv[0] != "torch")]
    return f"{model} B={b}: " + "; ".join(parts)


def verdict_lines(results: dict) -> list[str]:
    """The verdict of a ``results.json`` (dict), one line per answer."""
    lines = ["agree?         " + _agreement_line(results.get("agreement"))]
    per_model = _per_workload(results.get("timings", []))
    speed = [s for m, by_b in per_model.items() if (s := _speed_line(m, by_b))]
    private = [s for m, by_b in per_model.items() if (s := _private_line(m, by_b))]
    lines += [f"{'faster?' if i == 0 else '':<15}{s}" for i, s in enumerate(speed)] or [
        "faster?        not measured (no per-sample method ran in both frameworks)"]
    lines += [f"{'private step' if i == 0 else '':<15}{s}" for i, s in enumerate(private)] or [
        "private step   not measured (no private step ran with its framework's sgd)"]
    return lines


def format_verdict(results: dict) -> str:
    return "\n".join(["", "verdict", "-------", *verdict_lines(results)])
