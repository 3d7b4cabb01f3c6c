"""The summary table printed at the end of ``compare.run``: one block per (workload, batch size).

Columns: median ms and IQR; x over the same framework's batched reference; speed-up over that framework's
``loop``; torch/JAX ratio of the same method (and of the best per-sample method of each, on the block's last
line); ratio to the floor (reference + writing the output at the measured bandwidth); peak memory. Rows in
the order of ``compare.benchmark.targets.TARGETS`` (reference, per-sample methods, DP steps); each block ends with the
DP overhead of each framework: each private step's time over the non-private step's, and the best of them.
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
    groups = blocks(timings)
    many = len({k[0] for k in groups}) > 1
    head = (f"{'framework':<9} {'method':<17} {'median ms':>10} {'IQR ms':>8} {'x ref':>6} {'vs loop':>7} "
            f"{'torch/jax':>9} {'x floor':>7} {'peak MB':>8}  status")
    bw = "" if not bytes_per_s else f"; floor bandwidth {bytes_per_s / 1e9:.1f} GB/s"
    lines = []
    order = list(dict.fromkeys(k[0] for k in groups))  # workloads in run order
    for (model, dtype, device, bsz), rows in sorted(groups.items(),
                                                    key=lambda kv: (order.index(kv[0][0]), *kv[0][1:])):
        med = {(r["framework"], r["method"]): r["median_ms"] for r in rows if _ok(r)}
        lines += ["", f"{model + ' ' if many else ''}B={bsz} {dtype} {device}{bw}", head, "-" * len(head)]
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
        best = best_per_sample(rows)
        if best["torch"] and best["jax"]:
            t, j = best["torch"], best["jax"]
            lines.append(f"best per-sample: torch {t['method']} {t['median_ms']:.1f} ms, jax {j['method']} "
                         f"{j['median_ms']:.1f} ms, torch/jax = {t['median_ms'] / j['median_ms']:.2f}")
        lines += _dp_overhead_lines(rows)
    return "\n".join(lines[1:])


def best_per_sample(rows: list[dict]) -> dict[str, dict | None]:
    """Per framework, the fastest ok per-sample record of ``rows`` (one block: one workload and batch size)."""
    return {fw: min((r for r in rows if _ok(r) and r["framework"] == fw and r["kind"] == "per_sample"),
                    key=lambda r: r["median_ms"], default=None) for fw in ("torch", "jax")}


def best_private(rows: list[dict]) -> dict[str, tuple[dict, float]]:
    """Per framework with an ok ``sgd``: its fastest ok private step and that step's time over ``sgd``'s."""
    out = {}
    for fw in sorted({r["framework"] for r in rows}):
        step = {r["method"]: r for r in rows if r["framework"] == fw and r["kind"] == "dp" and _ok(r)}
        sgd = step.pop("sgd", None)
        if sgd is not None and step:
            best = min(step.values(), key=lambda r: r["median_ms"])
            out[fw] = (best, best["median_ms"] / sgd["median_ms"])
    return out


def blocks(timings: list[dict]) -> dict[tuple, list[dict]]:
    """The summary's blocks: (model, dtype, device, batch size) -> its records."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in timings:
        groups[(r.get("model") or "seed_cnn", r["dtype"], r["device"], r["batch_size"])].append(r)
    return groups


def _dp_overhead_lines(rows: list[dict]) -> list[str]:
    """``DP overhead <fw>: <step> X ms / sgd Y ms = Rx (...)`` for each private step with its framework's ``sgd``
    ok, then the best private step per framework (``x sgd`` in time and in peak memory)."""
    lines = []
    for fw in sorted({r["framework"] for r in rows}):
        step = {r["method"]: r for r in rows if r["framework"] == fw and r["kind"] == "dp" and _ok(r)}
        sgd = step.pop("sgd", None)
        if sgd is None:
            continue
        for name, dp in sorted(step.items(), key=lambda kv: kv[1]["median_ms"]):
            how = (f"per-sample: {dp.get('per_sample_method') or '?'}" if name == "dp_sgd"
                   else f"clipping: {dp.get('clipping') or name}")
            lines.append(f"DP overhead {fw}: {name} {dp['median_ms']:.1f} ms / sgd {sgd['median_ms']:.1f} ms = "
                         f"{dp['median_ms'] / sgd['median_ms']:.2f}x ({how})")
        if len(step) > 1:
            best = min(step.values(), key=lambda r: r["median_ms"])
            mem = ""
            if best.get("peak_mem_bytes") and sgd.get("peak_mem_bytes"):
                mem = f", peak memory {best['peak_mem_bytes'] / sgd['peak_mem_bytes']:.2f}x sgd's"
            lines.append(f"best private step {fw}: {best['method']} {best['median_ms'] / sgd['median_ms']:.2f}x sgd{mem}")
    return lines
