"""Where the lstm workload's time goes: per_layer and DP-SGD's bk / ghost at B=64, T=256, both sides.

Each stage is timed on its own (min of ``--repeats`` calls after one warm-up: a shared machine; JAX stages jitted separately,
so XLA cannot fuse across them), float32, CPU:
  forward; the SGD gradient (one batched forward + backward); forward + backward to every layer's output (what
  per_layer / ghost / bk start from); the LSTM rule's parts (gate cotangents = the layer's recomputed forward
  and its backward through time; the two bmm / einsum of dz with x and h_prev); the LSTM layer by the vmap
  fallback instead of its rule; the LSTM's Gram norm (forced) vs its materialised norm; the embedding's dense
  per-example gradient (per_layer's output, B x 10004 x 100) and its sparse norm; then per_layer, bk and ghost
  end to end.
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

from compare.spec import make_batch  # noqa: E402
from contract.cost_model import forced_routes  # noqa: E402
from compare.weights import init_weights  # noqa: E402

MODEL, LOSS = "lstm", "nll_log_softmax"


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


def torch_stages(batch: int, repeats: int) -> dict[str, float]:
    import torch
    from torch.func import functional_call

    from torch_impl import ghost, rules
    from torch_impl.model import resolve
    from torch_impl.per_layer import layer_params, output_cotangents, param_layers
    from torch_impl.per_sample import native_fn, native_inputs, reference_fn
    from torch_impl.rules import lstm as rl

    w = init_weights(0, MODEL)
    x, y = make_batch(batch, seed=0, model=MODEL)
    params, xt, yt = native_inputs(w, x, y, dtype="float32", device="cpu", model=MODEL)
    net = resolve(MODEL)
    layers = param_layers(net.module)
    lstm, emb = layers["lstm"], layers["embedding"]
    inputs, cots = output_cotangents(params, xt, yt, LOSS, MODEL)
    a, g = inputs["lstm"], cots["lstm"]
    own = layer_params(params, "lstm", lstm)
    dz, h_prev = rl.gate_cotangents(own, a, g)
    clip = 0.1

    def no_grad(fn):
        def run():
            with torch.no_grad():
                return fn()
        return run

    def gram_norm():
        with forced_routes(lstm="gram"):
            return rules.norm_sq(lstm, a, g, own)

    stages = {
        "forward": no_grad(lambda: functional_call(net.module, params, (xt,))),
        "SGD gradient (batched forward + backward)": lambda: reference_fn(loss=LOSS, model=MODEL)(params, xt, yt),
        "forward + backward to the layer outputs": lambda: output_cotangents(params, xt, yt, LOSS, MODEL),
        "lstm: gate cotangents (recompute + BPTT)": lambda: rl.gate_cotangents(own, a, g),
        "lstm: per-example grads from dz (2 bmm)": lambda: (torch.bmm(dz.transpose(1, 2), a),
                                                            torch.bmm(dz.transpose(1, 2), h_prev)),
        "lstm: rule total (per-example grads)": lambda: rules.per_example(lstm, own, a, g),
        "lstm: vmap fallback instead of the rule": lambda: rules.fallback_per_example(
            lstm, layer_params(params, "lstm", lstm), a, g),
        "lstm: materialised norm (rule + norms)": lambda: sum(rules.sq(v) for v in
                                                             rules.per_example(lstm, own, a, g).values()),
        "lstm: Gram norm (forced)": gram_norm,
        "embedding: dense per-example grads (B x V x d)": lambda: rules.per_example(emb, {}, inputs["embedding"],
                                                                                     cots["embedding"]),
        "embedding: sparse norm": lambda: rules.norm_sq(emb, inputs["embedding"], cots["embedding"]),
        "per_layer end to end": lambda: native_fn("per_layer", loss=LOSS, model=MODEL)(params, xt, yt),
        "dp bk clipped sum end to end": lambda: ghost.bk_clipped_sum(params, xt, yt, clip=clip, loss=LOSS,
                                                                      model=MODEL),
        "dp ghost clipped sum end to end": lambda: ghost.ghost_clipped_sum(params, xt, yt, clip=clip, loss=LOSS,
                                                                            model=MODEL),
    }
    return {name: _time(fn, lambda o: o, repeats) for name, fn in _report_rss(stages).items()}


def jax_stages(batch: int, repeats: int) -> dict[str, float]:
    import jax

    from jax_impl import ghost, rules
    from jax_impl.per_layer import layers, output_cotangents
    from jax_impl.per_sample import apply, native_fn, native_inputs, reference_fn
    from jax_impl.rules import lstm as rl

    w = init_weights(0, MODEL)
    x, y = make_batch(batch, seed=0, model=MODEL)
    params, xj, yj = native_inputs(w, x, y, dtype="float32", device="cpu", model=MODEL)
    inputs, cots = jax.jit(lambda p, x, y: output_cotangents(p, x, y, LOSS, MODEL))(params, xj, yj)
    a, g, ids, ge = inputs["lstm"], cots["lstm"], inputs["embedding"], cots["embedding"]
    lstm = lambda p: layers(p, MODEL)["lstm"]  # noqa: E731
    emb = lambda p: layers(p, MODEL)["embedding"]  # noqa: E731
    dz, h_prev = jax.jit(lambda p, a, g: rl.gate_cotangents(lstm(p), a, g))(params, a, g)
    clip = 0.1

    def gram(p, a, g):
        with forced_routes(lstm="gram"):  # read at trace time
            return rl.lstm_norm_sq(lstm(p), a, g)

    import jax.numpy as jnp

    from jax_impl.models.common import PRECISION

    jitted = {
        "forward": (jax.jit(lambda p, x: apply(p, x, MODEL)), (params, xj)),
        "SGD gradient (batched forward + backward)": (reference_fn(loss=LOSS, model=MODEL), (params, xj, yj)),
        "forward + backward to the layer outputs": (jax.jit(lambda p, x, y: output_cotangents(p, x, y, LOSS, MODEL)),
                                                    (params, xj, yj)),
        "lstm: gate cotangents (recompute + BPTT)": (jax.jit(lambda p, a, g: rl.gate_cotangents(lstm(p), a, g)),
                                                     (params, a, g)),
        "lstm: per-example grads from dz (2 einsum)": (jax.jit(lambda dz, a, h: (
            jnp.einsum("btd,btg->bdg", a, dz, precision=PRECISION),
            jnp.einsum("btd,btg->bdg", h, dz, precision=PRECISION))), (dz, a, h_prev)),
        "lstm: rule total (per-example grads)": (jax.jit(lambda p, a, g: rules.per_example(lstm(p), a, g)),
                                                 (params, a, g)),
        "lstm: vmap fallback instead of the rule": (jax.jit(lambda p, a, g: rules.fallback_per_example(
            lstm(p), a, g)), (params, a, g)),
        "lstm: materialised norm (rule + norms)": (jax.jit(lambda p, a, g: sum(
            rules.sq(v) for v in rules.per_example(lstm(p), a, g).values())), (params, a, g)),
        "lstm: Gram norm (forced)": (jax.jit(gram), (params, a, g)),
        "embedding: dense per-example grads (B x V x d)": (jax.jit(lambda p, i, g: rules.per_example(emb(p), i, g)),
                                                           (params, ids, ge)),
        "embedding: sparse norm": (jax.jit(lambda p, i, g: rules.norm_sq(emb(p), i, g)), (params, ids, ge)),
        "per_layer end to end": (native_fn("per_layer", loss=LOSS, model=MODEL), (params, xj, yj)),
        "dp bk clipped sum end to end": (jax.jit(lambda p, x, y: ghost.bk_clipped_sum(
            p, x, y, clip=clip, loss=LOSS, model=MODEL)), (params, xj, yj)),
        "dp ghost clipped sum end to end": (jax.jit(lambda p, x, y: ghost.ghost_clipped_sum(
            p, x, y, clip=clip, loss=LOSS, model=MODEL)), (params, xj, yj)),
    }
    stages = {name: (lambda f=f, args=args: f(*args)) for name, (f, args) in jitted.items()}
    return {name: _time(fn, jax.block_until_ready, repeats) for name, fn in _report_rss(stages).items()}


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
        stages = torch_stages(args.batch_size, args.repeats) if fw == "torch" else jax_stages(args.batch_size,
                                                                                              args.repeats)
        record["results"][fw] = stages
        print(f"== {fw}: lstm, B={args.batch_size}, T=256, float32, min of {args.repeats} (ms)")
        for name, ms in stages.items():
            print(f"  {ms:10.1f}  {name}")
        sys.stdout.flush()
    if args.json:
        args.json.write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
