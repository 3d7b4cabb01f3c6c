"""Where a private step's time over SGD goes: the step split into its parts, per workload and framework.

  python scripts/dp_breakdown.py --framework jax --model embed,mnist_cnn --batch-size 256 --out paper/cpu-suite/breakdown

Times (``compare.benchmark.targets.measure``: native callables on ready inputs, median of >= 5 calls and >= 1 s,
JAX jitted) of: ``sgd`` (one non-private step), ``norms`` (the ghost per-example norms alone: one forward, one
backward to the layer outputs, every layer's norm rule) and ``bk`` (the book-keeping step: norms + the
clipped sum from the same backward + noise + update). One process per framework, run it on an idle machine; the JSON records carry the CPU model and versions.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from compare.benchmark.results import cpu_model
from compare.benchmark.targets import DP_HPARAMS, NOISE, NOISE_SEED, measure, sync_fn
from compare.frameworks import side
from compare.provenance import command_line, provenance
from compare.spec import parse_models


def _parts(framework: str, model: str, batch: int) -> dict[str, tuple]:
    from compare.spec import make_batch
    from compare.weights import init_weights

    dp = side(framework)
    x, y = make_batch(batch, 0, model=model)
    params, xn, yn = dp.native_inputs(init_weights(0, model=model), x, y, model=model)
    noise = NOISE[framework](dp, params, NOISE_SEED)
    sgd = dp.make_sgd_step(lr=DP_HPARAMS["lr"], model=model)
    bk = dp.make_step(**DP_HPARAMS, clipping="bk", model=model)

    def norms(p, a, b):
        return dp.per_example_norms(p, a, b, loss="nll_log_softmax", clipping="ghost", model=model)

    if framework == "jax":
        import jax

        norms = jax.jit(norms)
    return {"sgd": (sgd, (params, xn, yn)), "norms": (norms, (params, xn, yn)), "bk": (bk, (params, xn, yn, noise))}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--framework", choices=("torch", "jax"), required=True)
    p.add_argument("--model", type=parse_models, default=("embed",))
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--out", type=Path, help="write DIR/<framework>.json")
    a = p.parse_args(argv)
    sync = sync_fn(a.framework, "cpu")
    records = []
    for model in a.model:
        row = {"model": model, "framework": a.framework, "batch_size": a.batch_size}
        for name, (fn, args) in _parts(a.framework, model, a.batch_size).items():
            row[f"{name}_ms"] = measure(fn, args, sync, min_repeats=5, min_seconds=1.0).median_ms
        row["bk_over_sgd"] = row["bk_ms"] / row["sgd_ms"]
        row["norms_over_sgd"] = row["norms_ms"] / row["sgd_ms"]
        print(json.dumps(row))
        records.append(row)
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        meta = {**provenance(command_line(argv, "python scripts/dp_breakdown.py")), "cpu": cpu_model()}
        (a.out / f"{a.framework}.json").write_text(json.dumps({"meta": meta, "records": records}, indent=1))


if __name__ == "__main__":
    main()
