"""The embedding norm's two forms, timed against each other: the T x T equality Gram and the per-row sort.

  MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1099511627776 \
    python scripts/embed_cost_model.py --framework torch --out paper/perf-embed/costmodel-torch.json

For each (T positions, d features) of a small panel, ids uniform below 10004 (the workloads' vocabulary) and
standard normal cotangents at B = 64: both norm forms of ``<fw>_impl.rules.embedding`` (JAX: jitted), timed in
interleaved rounds (shuffled order per round), median per-round ratio gram / sort with a bootstrap 95%
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

sys.path.insert(0, str(Path(__file__).parent))
from paired_dp import bootstrap_median, paired, set_threads  # noqa: E402

from compare.benchmark.results import cpu_model  # noqa: E402
from compare.env import memory_settings  # noqa: E402
from contract.cost_model import embedding_costs, embedding_route  # noqa: E402

PANEL = [(t, d) for d in (16, 256) for t in (2, 4, 8, 16, 32, 64, 256)]
VOCAB = 10004


def _forms(framework: str, ids: np.ndarray, g: np.ndarray) -> tuple[dict, object]:
    if framework == "torch":
        import torch

        from torch_impl.rules import embedding as e

        i, c = torch.as_tensor(ids), torch.as_tensor(g)
        return {"gram": (e._gram_norm_sq, (i, c)), "sort": (e._sort_norm_sq, (i, c))}, lambda o: o
    import jax

    from jax_impl.rules import embedding as e

    i, c = jax.numpy.asarray(ids), jax.numpy.asarray(g)
    return {"gram": (jax.jit(e._gram_norm_sq), (i, c)),
            "sort": (jax.jit(lambda a, b: e._sort_norm_sq(a, b, VOCAB)), (i, c))}, jax.block_until_ready


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--framework", choices=("torch", "jax"), required=True)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=25)
    p.add_argument("--threads", type=int, help="intra-op threads (default: the framework's own choice)")
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    set_threads(a.framework, a.threads)
    rng = np.random.default_rng(0)
    records = []
    for t, d in PANEL:
        ids = rng.integers(0, VOCAB, (a.batch_size, t))
        g = rng.standard_normal((a.batch_size, t, d)).astype(np.float32)
        forms, sync = _forms(a.framework, ids, g)
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
