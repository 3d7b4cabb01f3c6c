"""Where the lstm workload's time goes: per_layer and DP-SGD's bk / ghost at B=64, T=256, both sides.

Each stage is timed on its own (min of ``--repeats`` calls after one warm-up: a shared machine; JAX stages jitted separately,
so XLA cannot fuse across them), float32, CPU, each side reached through its interface (``compare.frameworks.side``):
  the engine's forward (recording every layer's input); the SGD gradient (one batched forward + backward); forward +
  backward to every layer's output (what per_layer / ghost / bk start from); the LSTM rule's per-example gradients;
  the LSTM layer by the vmap fallback instead of its rule; the LSTM's Gram norm (forced) vs its materialised norm;
  the embedding's dense per-example gradient (per_layer's output, B x 10004 x 100) and its sparse norm; then
  per_layer, bk and ghost end to end (``clipped_grad_sum``).
Usage: python scripts/lstm_profile.py [--framework torch|jax|both] [--batch-size 64] [--repeats 5] [--json F]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compare.frameworks import side  # noqa: E402
from compare.spec import make_batch  # noqa: E402
from compare.weights import init_weights  # noqa: E402

MODEL, LOSS, CLIP = "lstm", "nll_log_softmax", 0.1


def _time(fn: Callable[[], object], sync: Callable[[object], object], repeats: int) -> float:
    sync(fn())  # warm-up (and compile)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sync(fn())
        out.append((time.perf_counter() - t0) * 1e3)
    return min(out)  # the least disturbed call: the machine is shared (2 cores, other jobs)


def _report_rss(stages: dict[str, Callable[[], object]]) -> dict[str, Callable[[], object]]:
    """Each stage wrapped to print the process's peak RSS after its first call (to stderr)."""
    import resource

    def wrap(name: str, fn: Callable[[], object]) -> Callable[[], object]:
        seen = []

        def run() -> object:
            out = fn()
            if not seen:
                seen.append(1)
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
                print(f"    peak RSS {peak:.2f} GiB after {name}", file=sys.stderr, flush=True)
            return out
        return run

    return {name: wrap(name, fn) for name, fn in stages.items()}


def stages(framework: str, batch: int) -> tuple[dict[str, Callable[[], object]], Callable[[object], object]]:
    """The profile's stages on one side, through its interface: the engine's forward and backward to the layer
    outputs (``per_layer_stages``), the LSTM's and the embedding's rules (``layer_stages``), the end-to-end
    functions (``reference_fn``, ``native_fn``, ``clipped_grad_sum``)."""
    api = side(framework)
    w = init_weights(0, MODEL)
    x, y = make_batch(batch, seed=0, model=MODEL)
    params, xn, yn = api.native_inputs(w, x, y, dtype="float32", device="cpu", model=MODEL)
    engine, sync = api.per_layer_stages(params, xn, yn, LOSS, MODEL)
    lstm, _ = api.layer_stages(params, xn, yn, LOSS, MODEL, "lstm")
    emb, _ = api.layer_stages(params, xn, yn, LOSS, MODEL, "embedding")
    sgd, per_layer = api.reference_fn(loss=LOSS, model=MODEL), api.native_fn("per_layer", loss=LOSS, model=MODEL)

    def clipped_sum(clipping: str) -> Callable[[], object]:
        return lambda: api.clipped_grad_sum(params, xn, yn, clip=CLIP, loss=LOSS, clipping=clipping, model=MODEL)

    return {
        "forward (recording the layers' inputs)": engine["forward"],
        "SGD gradient (batched forward + backward)": lambda: sgd(params, xn, yn),
        "forward + backward to the layer outputs": engine["forward+backward to outputs"],
        "lstm: rule total (per-example grads)": lstm["grads: rule"],
        "lstm: vmap fallback instead of the rule": lstm["grads: fallback"],
        "lstm: materialised norm (rule + norms)": lstm["norm: materialize"],
        "lstm: Gram norm (forced)": lstm["norm: gram"],
        "embedding: dense per-example grads (B x V x d)": emb["grads: rule"],
        "embedding: sparse norm": emb["norm: rule"],
        "per_layer end to end": lambda: per_layer(params, xn, yn),
        "dp bk clipped sum end to end": clipped_sum("bk"),
        "dp ghost clipped sum end to end": clipped_sum("ghost"),
    }, sync


def timed(framework: str, batch: int, repeats: int) -> dict[str, float]:
    fns, sync = stages(framework, batch)
    return {name: _time(fn, sync, repeats) for name, fn in _report_rss(fns).items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--framework", choices=("torch", "jax", "both"), default="both")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--torch-threads", type=int, default=1, help="torch intra-op threads (default 1: with 2 OpenMP "
                   "threads on a 2-core machine shared with other jobs, one descheduled thread stalls every op; "
                   "measured 0.25-12 s for the same SGD gradient)")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.torch_threads)

    from compare.provenance import command_line, provenance

    record = {"meta": provenance(command_line(argv, "python scripts/lstm_profile.py")), "batch_size": args.batch_size, "T": 256, "dtype": "float32", "repeats": args.repeats,
              "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
              "torch_threads": torch.get_num_threads(), "results": {}}
    for fw in (("torch", "jax") if args.framework == "both" else (args.framework,)):
        results = timed(fw, args.batch_size, args.repeats)
        record["results"][fw] = results
        print(f"== {fw}: lstm, B={args.batch_size}, T=256, float32, min of {args.repeats} (ms)")
        for name, ms in results.items():
            print(f"  {ms:10.1f}  {name}")
        sys.stdout.flush()
    if args.json:
        args.json.write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
