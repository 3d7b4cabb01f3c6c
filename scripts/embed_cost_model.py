"""The embedding norm's two forms, timed against each other: the T x T equality Gram and the per-row sort.

  MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1099511627776 \
    python scripts/embed_cost_model.py --framework torch --out paper/perf-embed/costmodel-torch.json

For each (T positions, d features) of a small panel, the embed network at width d on a seeded batch of B = 64
sequences of T ids uniform below 10004 (the workloads' vocabulary): both norm forms of the side's embedding rule
(``layer_stages`` with the embedding route forced; JAX: jitted) on the layer's real cotangent (the forms' cost
depends on the ids and shapes only), timed in interleaved rounds (shuffled order per round), median per-round ratio gram / sort with a bootstrap 95%
interval. ``contract.cost_model.embedding_costs``' constants are read off the crossovers; the record says which form the
model picks at each point.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]  # paired_dp; this checkout
from paired_dp import bootstrap_median, paired, set_threads  # noqa: E402

from compare.benchmark.results import cpu_model  # noqa: E402
from compare.env import memory_settings  # noqa: E402
from contract.cost_model import embedding_costs, embedding_route  # noqa: E402

PANEL = [(t, d) for d in (16, 256) for t in (2, 4, 8, 16, 32, 64, 256)]
VOCAB = 10004


def _forms(framework: str, t: int, d: int, batch: int) -> tuple[dict, object]:
    """{form: (callable, ())} of the embedding's two norm forms on the embed network at T positions and width d
    (the side's ``variant``; torch's init after ``torch.manual_seed(0)``, a seeded batch of uniform ids), through the
    side's ``layer_stages``: its norm rule forced to each form."""
    from compare.frameworks import side
    from compare.spec import Workload, make_batch

    api = side(framework)
    weights = side("torch").init_weights(0, "embed", width=d)
    spec = Workload(f"embed_T{t}_d{d}", (t,), 2, {k: v.shape for k, v in weights.items()}, vocab_size=VOCAB)
    net = api.variant(spec, "embed", width=d)
    x, y = make_batch(batch, seed=0, model=spec)
    params, xn, yn = api.native_inputs(weights, x, y, dtype="float32", device="cpu", model=net)
    stages, sync = api.layer_stages(params, xn, yn, "nll_log_softmax", net, "embedding")
    return {form: (stages[f"norm: {form}"], ()) for form in ("gram", "sort")}, sync


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--framework", choices=("torch", "jax"), required=True)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=25)
    p.add_argument("--threads", type=int, help="intra-op threads (default: the framework's own choice)")
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    set_threads(a.framework, a.threads)
    records = []
    for t, d in PANEL:
        forms, sync = _forms(a.framework, t, d, a.batch_size)
        times = paired(forms, sync, rounds=a.rounds, warmup=3)
        med, lo, hi = bootstrap_median(np.asarray(times["gram"]) / np.asarray(times["sort"]))
        row = {"T": t, "d": d, "batch_size": a.batch_size, "gram_ms": float(np.median(times["gram"])),
               "sort_ms": float(np.median(times["sort"])), "gram_over_sort": med, "ci95": [lo, hi],
               "model_gram_over_sort": embedding_costs(t, d)[0] / embedding_costs(t, d)[1],
               "model_picks": embedding_route(t, d)}
        print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
        records.append(row)
    if a.out:
        from compare.provenance import command_line, provenance

        meta = {**provenance(command_line(argv, "python scripts/embed_cost_model.py")), "cpu": cpu_model(),
                "memory_env": memory_settings(), "threads": a.threads,
                "loadavg_after": os.getloadavg()}
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"meta": meta, "records": records}, indent=1))


if __name__ == "__main__":
    main()
