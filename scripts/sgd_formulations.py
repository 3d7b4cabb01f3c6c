"""Is ``sgd`` the fastest plain step? A framework's SGD step against its private step and against the parts of a
step, timed as pairs: same process, interleaved rounds, shuffled order (``compare.benchmark.paired``).

  MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1099511627776 PYTHONPATH=. \\
    python scripts/sgd_formulations.py --framework jax --model ffnn,lstm,transformer --batch-sizes 16,64 \\
      --threads 1 --out paper/perf-sgd/jax.json

Targets (each built as the harness builds its ``dp`` points, warmed up / compiled first):
  sgd       ``dp.make_sgd_step`` (the baseline every "x SGD" ratio divides by)
  dp_bk     the book-keeping private step (``dp.make_step(clipping="bk")``)
  grad      the batched mean-loss gradient alone (JAX: ``jax.grad``; torch: ``autograd.grad``), no update
  outputs   forward + backward to every parameterised layer's output (where ``dp_bk`` starts; no weight grads)
  forward   the batched loss alone
torch: also ``sgd_func_grad``, the SGD step with its gradient from ``torch.func.grad_and_value`` (before
``dp.batch_grad_and_value``). A model with an LSTM: also ``sgd_scan_autodiff``, the SGD step with the recurrence differentiated by the framework
(``jax.grad`` of its ``lax.scan``; torch's autograd of its loop): the formulation before ``recurrence`` got its own
backward on both sides.
Reported per point: each target's median ms and its paired ratio to ``sgd`` (median per-round ratio, bootstrap 95%).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from compare.benchmark.paired import calls_per_slot, interleave, paired_ratio
from compare.benchmark.results import cpu_model
from compare.benchmark.targets import prepare, sync_fn
from compare.env import memory_settings
from compare.frameworks import side
from compare.spec import DEFAULT_LOSS, parse_models
from compare.weights import init_weights

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paired_dp import append_run, set_threads  # noqa: E402


def _parts(framework: str, model: str, params: Any, x: Any, y: Any) -> dict[str, Callable[[], Any]]:
    """grad / forward / outputs on one side, through its interface."""
    api = side(framework)
    if framework == "jax":
        import jax

        fns = {"grad": api.reference_fn(loss=DEFAULT_LOSS, model=model),
               "forward": jax.jit(lambda p, x, y: api.batch_loss(p, x, y, DEFAULT_LOSS, model)),
               "outputs": jax.jit(lambda p, x, y: api.layer_cotangents(p, x, y, DEFAULT_LOSS, model))}
        return {n: (lambda f=f: f(params, x, y)) for n, f in fns.items()}
    import torch

    live = {k: v.detach().requires_grad_(True) for k, v in params.items()}

    def grad() -> Any:
        return torch.autograd.grad(api.batch_loss(live, x, y, DEFAULT_LOSS, model), list(live.values()),
                                   allow_unused=True)

    def forward() -> Any:
        with torch.no_grad():
            return api.batch_loss(params, x, y, DEFAULT_LOSS, model)

    return {"grad": grad, "forward": forward,
            "outputs": lambda: api.layer_cotangents(params, x, y, DEFAULT_LOSS, model)}


def point(framework: str, model: str, batch: int, *, rounds: int, min_seconds: float) -> dict:
    weights = init_weights(0, model=model)
    sync = sync_fn(framework, "cpu")
    built = {m: prepare(framework, "dp", m, weights, batch, dtype="float32", device=None, loss=DEFAULT_LOSS,
                        model=model) for m in ("sgd", "dp_bk")}
    targets = {m: (lambda fn=fn, args=args: sync(fn(*args))) for m, (fn, args) in built.items()}
    params, x, y = built["sgd"][1]
    targets.update({n: (lambda f=f: sync(f())) for n, f in _parts(framework, model, params, x, y).items()})
    if framework == "jax" and model in ("lstm",):
        with side(framework).autodiff_recurrence():  # traced and compiled inside: the plain scan's gradient
            fn, args = prepare(framework, "dp", "sgd", weights, batch, dtype="float32", device=None,
                               loss=DEFAULT_LOSS, model=model)
            sync(fn(*args))
        targets["sgd_scan_autodiff"] = lambda fn=fn, args=args: sync(fn(*args))
    if framework == "torch":  # the step before ``dp.batch_grad_and_value``: torch.func's transform
        from functools import partial

        from torch.func import grad_and_value

        func_grad = grad_and_value(partial(side(framework).batch_loss, loss=DEFAULT_LOSS, model=model))

        def sgd_func_grad() -> Any:
            grads, value = func_grad(params, x, y)
            return sync(({k: params[k] - 0.1 * grads[k] for k in params}, value))
        targets["sgd_func_grad"] = sgd_func_grad
    if framework == "torch" and model in ("lstm",):
        def plain_sgd(fn: Any = built["sgd"][0], args: tuple = built["sgd"][1]) -> Any:
            with side(framework).autodiff_recurrence():
                return sync(fn(*args))
        targets["sgd_scan_autodiff"] = plain_sgd
    calls = {}
    for name, fn in targets.items():  # warm-up (compile), then the calls per slot from the last warm-up call
        for _ in range(2):
            t0 = time.perf_counter()
            fn()
            ms = (time.perf_counter() - t0) * 1e3
        calls[name] = calls_per_slot(ms)
    run = interleave(targets, calls, rounds=rounds, min_seconds=min_seconds)
    sgd = run.rounds_ms["sgd"]
    return {"framework": framework, "model": model, "batch_size": batch, "dtype": "float32",
            "calls_per_slot": run.calls, "loadavg_max": run.loadavg_max,
            "median_ms": {n: float(np.median(t)) for n, t in run.rounds_ms.items()},
            "ratio_to_sgd": {n: paired_ratio(t, sgd).to_json() for n, t in run.rounds_ms.items() if n != "sgd"},
            "times_ms": run.rounds_ms,
            **({"ratio_to_sgd_scan_autodiff": {n: paired_ratio(t, run.rounds_ms["sgd_scan_autodiff"]).to_json()
                                               for n, t in run.rounds_ms.items() if n != "sgd_scan_autodiff"}}
               if "sgd_scan_autodiff" in run.rounds_ms else {})}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--framework", choices=("torch", "jax"), required=True)
    p.add_argument("--model", type=parse_models, default=("ffnn", "lstm", "transformer"))
    p.add_argument("--batch-sizes", default="16,64")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--min-seconds", type=float, default=0.0, help="more rounds until each target has this much")
    p.add_argument("--threads", type=int, help="intra-op threads (default: the framework's own choice)")
    p.add_argument("--out", type=Path, help="append the records to this JSON file (created with its meta)")
    a = p.parse_args(argv)
    set_threads(a.framework, a.threads)
    records = []
    for model in a.model:
        for b in (int(s) for s in a.batch_sizes.split(",")):
            row = point(a.framework, model, b, rounds=a.rounds, min_seconds=a.min_seconds)
            row["threads"] = a.threads
            short = {n: f"{r['median']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]"
                     for n, r in row["ratio_to_sgd"].items()}
            print(f"{a.framework} {model} B={b} sgd {row['median_ms']['sgd']:.2f} ms  {short}", flush=True)
            records.append(row)
    if a.out:
        from compare.provenance import command_line, provenance

        meta = {**provenance(command_line(argv, "python scripts/sgd_formulations.py")), "cpu": cpu_model(),
                "cores": os.cpu_count(), "memory_env": memory_settings(), "loadavg_after": os.getloadavg()}
        append_run(a.out, meta, records)


if __name__ == "__main__":
    main()
