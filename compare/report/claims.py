"""The fast-dpsgd study's three claims (Subramani, Vadivelu & Kamath 2021), read against the committed study
runs: JAX up to 50× faster than the best alternative; DP overhead up to two orders of magnitude; JAX private
training near non-private speed. Every number is computed here from the runs' rows."""
from __future__ import annotations

from compare.benchmark.suite import suite_rows
from compare.report.markdown import span, words
from compare.report.sources import Paper

KEYS = ("private", "peer_best", "per_sample")


def _coverage(row: dict) -> set[tuple[str, str]]:
    return {(fw, k) for fw in ("torch", "jax") for k in KEYS if row.get(fw, {}).get(k)}


def merged_rows(paper: Paper) -> dict[tuple[str, int], dict]:
    """{(model, B): row}: each point's newest study row that covers at least what the earlier one did."""
    out: dict[tuple[str, int], dict] = {}
    for run in paper.study_runs:
        for row in suite_rows(paper.run(run).timings):
            key = (row["model"], row["batch_size"])
            if key not in out or _coverage(row) >= _coverage(out[key]):
                out[key] = row
    return out


def _best(entry: dict) -> float | None:
    ms = [v.get("ms") for v in (entry.get("private"), entry.get("peer_best")) if v]
    return min(ms) if ms else None


def claims_text(paper: Paper, batch: int) -> str | None:
    rows = merged_rows(paper)
    if not rows:
        return None
    models = list(dict.fromkeys(m for m, _ in rows))
    speed = {k: (_best(r["torch"]) / _best(r["jax"])) for k, r in rows.items() if _best(r["torch"]) and _best(r["jax"])}
    by_model = {m: [v for (mm, _), v in speed.items() if mm == m] for m in models}
    jax_faster = [m for m, v in by_model.items() if v and min(v) > 1]
    torch_faster = [m for m, v in by_model.items() if v and max(v) < 1]
    mixed = [m for m, v in by_model.items() if v and m not in jax_faster + torch_faster]
    top = max(speed.items(), key=lambda kv: kv[1]) if speed else None
    peer_x = {(k, fw): r[fw]["peer_best"] for k, r in rows.items() for fw in ("torch", "jax") if r[fw].get("peer_best")}
    worst_peer = max(peer_x.items(), key=lambda kv: kv[1]["x_sgd"]) if peer_x else None
    ours = {fw: [r[fw]["private"]["x_sgd"] for r in rows.values() if r[fw].get("private")] for fw in ("torch", "jax")}
    at = {m: rows[(m, batch)] for m in models if (m, batch) in rows}
    near = {fw: {m: r[fw]["private"]["x_sgd"] for m, r in at.items() if r[fw].get("private")} for fw in ("torch", "jax")}
    lines = [
        "1. *JAX up to 50× faster than the best alternative.* Best PyTorch private step (ours or Opacus') over the "
        f"best JAX one (ours or jax-privacy's), every workload and batch size: {span(list(speed.values()))}"
        + (f", largest {top[1]:.2f} (`{top[0][0]}`, B = {top[0][1]})" if top else "") + ". JAX is faster at every "
        f"batch size on {words([f'`{m}`' for m in jax_faster])}; PyTorch on {words([f'`{m}`' for m in torch_faster])}"
        + (f"; it depends on B for {words([f'`{m}`' for m in mixed])}" if mixed else "") + ".",
        "2. *DP overhead up to two orders of magnitude.* The peers' best private step over their framework's SGD "
        "step reaches "
        + (f"{worst_peer[1]['x_sgd']:.0f}× (`{worst_peer[1]['method']}`, `{worst_peer[0][0][0]}`, B = "
           f"{worst_peer[0][0][1]})" if worst_peer else "–")
        + f"; our best private step is {span(ours['torch'])}× SGD in PyTorch and {span(ours['jax'])}× in JAX.",
        f"3. *JAX private training near non-private speed.* At B = {batch}, JAX's best private step over its SGD "
        "step: " + "; ".join(f"`{m}` {v:.2f}" for m, v in near["jax"].items()) + ". PyTorch's, with the same "
        "algorithms: " + "; ".join(f"`{m}` {v:.2f}" for m, v in near["torch"].items()) + "."]
    return "\n".join(lines)
