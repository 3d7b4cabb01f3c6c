"""The summary table printed at the end of ``compare.run``: one block per batch size.

Columns: median ms and IQR; x over the same framework's batched reference; speed-up over that framework's
``loop``; torch/JAX ratio of the same method (and of the best per-sample method of each, on the block's last
line); ratio to the floor (reference + writing the output at the measured bandwidth); peak memory. Rows in
the order of ``compare.benchmark.targets.TARGETS`` (reference, per-sample methods, DP steps); each block ends with the
DP overhead of each framework: DP-SGD step time over the non-private step's.
"""
from __future__ import annotations

from collections import defaultdict

from compare.benchmark.targets import TARGETS

KIND_ORDER = {kind: i for i, kind in enumerate(TARGETS)}


def _fmt(value: float | None, spec: str) -> str:
    """``format(value, spec)``, or a dash right-aligned to the same width."""
    width = int(spec.split(".")[0] or 0)
    return "-".rjust(width) if value is None else format(value, spec)


def _ok(r: dict) -> bool:
    return r["status"] == "ok" and r["median_ms"] is not None


def format_summary(timings: list[dict], bytes_per_s: float | None = None) -> str:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in timings:
        groups[(r["dtype"], r["device"], r["batch_size"])].append(r)
    head = (f"{'framework':<9} {'method':<17} {'median ms':>10} {'IQR ms':>8} {'x ref':>6} {'vs loop':>7} "
            f"{'torch/jax':>9} {'x floor':>7} {'peak MB':>8}  status")
    bw = "" if not bytes_per_s else f"; floor bandwidth {bytes_per_s / 1e9:.1f} GB/s"
    lines = []
    for (dtype, device, bsz), rows in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
        med = {(r["framework"], r["method"]): r["median_ms"] for r in rows if _ok(r)}
        lines += ["", f"B={bsz} {dtype} {device}{bw}", head, "-" * len(head)]
        rows = sorted(rows, key=lambda r: (r["framework"], KIND_ORDER.get(r["kind"], len(KIND_ORDER)), r["method"]))
        for r in rows:
            fw, m = r["framework"], r["method"]
            other = "jax" if fw == "torch" else "torch"
            ref, loop = med.get((fw, "batched")), med.get((fw, "loop"))
            x = r["median_ms"] if _ok(r) else None
            ratio = None
            if x is not None and (other, m) in med:
                ratio = x / med[(other, m)] if fw == "torch" else med[(other, m)] / x
            peak = r.get("peak_mem_bytes")
            lines.append(
                f"{fw:<9} {m:<17} {_fmt(x, '10.1f')} {_fmt(r['iqr_ms'] if x else None, '8.1f')} "
                f"{_fmt(x / ref if x and ref else None, '6.2f')} {_fmt(loop / x if x and loop else None, '7.2f')} "
                f"{_fmt(ratio, '9.2f')} {_fmt(r.get('ratio_to_floor'), '7.2f')} "
                f"{_fmt(peak / 1e6 if peak is not None else None, '8.0f')}  "
                f"{r['status']}{': ' + r['reason'][:60] if r['reason'] else ''}")
        best = {fw: min((r for r in rows if _ok(r) and r["framework"] == fw and r["kind"] == "per_sample"),
                        key=lambda r: r["median_ms"], default=None) for fw in ("torch", "jax")}
        if best["torch"] and best["jax"]:
            t, j = best["torch"], best["jax"]
            lines.append(f"best per-sample: torch {t['method']} {t['median_ms']:.1f} ms, jax {j['method']} "
                         f"{j['median_ms']:.1f} ms, torch/jax = {t['median_ms'] / j['median_ms']:.2f}")
        lines += _dp_overhead_lines(rows)
    return "\n".join(lines[1:])


def _dp_overhead_lines(rows: list[dict]) -> list[str]:
    """``DP overhead <fw>: dp_sgd X ms / sgd Y ms = Rx (per-sample: vmap)`` per framework with both steps ok."""
    lines = []
    for fw in sorted({r["framework"] for r in rows}):
        step = {r["method"]: r for r in rows if r["framework"] == fw and r["kind"] == "dp" and _ok(r)}
        if "dp_sgd" in step and "sgd" in step:
            dp, sgd = step["dp_sgd"], step["sgd"]
            lines.append(f"DP overhead {fw}: dp_sgd {dp['median_ms']:.1f} ms / sgd {sgd['median_ms']:.1f} ms = "
                         f"{dp['median_ms'] / sgd['median_ms']:.2f}x (per-sample: "
                         f"{dp.get('per_sample_method') or '?'})")
    return lines
