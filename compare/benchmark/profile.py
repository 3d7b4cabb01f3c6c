"""``python -m compare.profile``: where one per-sample method spends its time, so analyses cite profiles.

  torch: ``torch.profiler`` over ``--repeats`` warm calls, the top ops by self CPU time (key_averages);
  jax:   the ops XLA compiled (convolutions with their group counts, dots, fusions) with shapes and the
         compiler's FLOP / byte estimates (XLA:CPU has no per-op timer; jax.profiler traces need xprof);
  per_layer, both frameworks: wall time of each stage (forward, forward+backward to the layer outputs,
         each layer's rule), timed separately after a warm-up;
  reference, both frameworks: the forward alone, then the batched gradient w.r.t. subsets of the parameters
         (fc only: no conv backward; conv2 only: adds conv2's weight-gradient convolution; conv1 only: adds
         conv2's input-gradient convolution), which isolates the convolution backward passes on any backend.
Example: ``python -m compare.profile --framework torch --method per_layer --batch-size 256``
"""
from __future__ import annotations

import argparse
import re
import statistics
import time
from dataclasses import dataclass
from typing import Callable

from compare.frameworks import FRAMEWORKS, impl_module, per_sample_module
from compare.spec import DEFAULT_LOSS, LOSSES, make_batch
from compare.weights import init_weights


@dataclass(frozen=True)
class Config:
    framework: str
    method: str
    batch_size: int
    loss: str
    dtype: str
    repeats: int
    top: int


def parse_args(argv: list[str] | None = None) -> Config:
    p = argparse.ArgumentParser(prog="python -m compare.profile", description=__doc__.splitlines()[0])
    p.add_argument("--framework", choices=FRAMEWORKS, required=True)
    p.add_argument("--method", default="per_layer", help="a per-sample method, or 'reference' (batched gradient)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--loss", choices=LOSSES, default=DEFAULT_LOSS)
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--repeats", type=int, default=3, help="profiled calls after one warm-up call")
    p.add_argument("--top", type=int, default=15, help="rows of the op table")
    a = p.parse_args(argv)
    if a.batch_size < 1 or a.repeats < 1 or a.top < 1:
        p.error("--batch-size, --repeats and --top must be positive")
    ps = per_sample_module(a.framework)
    if a.method != "reference" and a.method not in ps.METHODS:
        p.error(f"unknown {a.framework} method {a.method!r}; expected 'reference' or one of {ps.METHODS}")
    return Config(a.framework, a.method, a.batch_size, a.loss, a.dtype, a.repeats, a.top)


def _median_ms(fn: Callable[[], object], sync: Callable[[object], object], repeats: int) -> tuple[float, float]:
    """(median wall ms, median process CPU ms): on a shared machine CPU time is the steadier of the two."""
    sync(fn())  # warm-up (and compilation)
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        sync(fn())
        wall.append(1e3 * (time.perf_counter() - t))
        cpu.append(1e3 * (time.process_time() - c))
    return statistics.median(wall), statistics.median(cpu)


def _setup(cfg: Config):
    ps = per_sample_module(cfg.framework)
    x, y = make_batch(cfg.batch_size, seed=0, dtype=cfg.dtype)
    args = ps.native_inputs(init_weights(0), x, y, dtype=cfg.dtype, device="cpu")
    fn = ps.reference_fn(loss=cfg.loss) if cfg.method == "reference" else ps.native_fn(cfg.method, loss=cfg.loss)
    return ps, fn, args


def torch_op_table(cfg: Config) -> str:
    """torch.profiler's top ops by self CPU time over ``cfg.repeats`` calls (after one warm-up call)."""
    from torch.profiler import ProfilerActivity, profile

    _, fn, args = _setup(cfg)
    fn(*args)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(cfg.repeats):
            fn(*args)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=cfg.top)


_HEAVY_OP = re.compile(r"=\s*(\S+)\s+(convolution|dot|fusion|custom-call|reduce-window|select-and-scatter)\(")


def jax_compiled_ops(cfg: Config) -> str:
    """The heavy ops of the optimised HLO (with conv group counts), plus XLA's cost estimate of the whole call."""
    import jax

    _, fn, args = _setup(cfg)
    compiled = jax.jit(fn).lower(*args).compile()
    lines = []
    for line in compiled.as_text().splitlines():
        m = _HEAVY_OP.search(line)
        if m and "ENTRY" not in line:
            groups = " ".join(re.findall(r"(?:feature|batch)_group_count=\d+", line))
            dims = re.search(r"dim_labels=(\S+?)[,\s]", line)
            lines.append(f"  {m.group(2):18s} {m.group(1):40s} {groups} {dims.group(1) if dims else ''}".rstrip())
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    flops, nbytes = cost.get("flops", float("nan")), cost.get("bytes accessed", float("nan"))
    wall, cpu = _median_ms(lambda: fn(*args), jax.block_until_ready, cfg.repeats)
    head = f"XLA estimate: {flops / 1e9:.2f} GFLOP, {nbytes / 1e9:.2f} GB accessed; median {wall:.1f} ms wall, {cpu:.1f} ms CPU"
    return "\n".join([head, f"{len(lines)} heavy ops (first {cfg.top}):", *lines[: cfg.top]])


def per_layer_stages(cfg: Config) -> list[tuple[str, tuple[float, float]]]:
    """Median (wall, CPU) ms of each stage of ``per_layer``: forward, forward+backward to outputs, each layer's rule."""
    _, _, (params, x, y) = _setup(cfg)
    pl = impl_module(cfg.framework, "per_layer")
    if cfg.framework == "torch":
        inputs, cots = pl.output_cotangents(params, x, y, cfg.loss)
        sync = lambda v: v  # noqa: E731 - CPU ops are synchronous

        stages = {"forward": lambda: pl.forward_to_outputs(params, x),
                  "forward+backward to outputs": lambda: pl.output_cotangents(params, x, y, cfg.loss)}
        for layer, rule in pl.RULES.items():
            stages[f"rule {layer}"] = lambda layer=layer, rule=rule: rule(inputs[layer], cots[layer])
    else:
        import jax
        import jax.numpy as jnp

        zeros = {k: jnp.zeros(s, x.dtype) for k, s in pl.output_shapes(x.shape[0]).items()}
        inputs, cots = jax.jit(pl.output_cotangents, static_argnums=3)(params, x, y, cfg.loss)
        sync = jax.block_until_ready
        fwd, fwd_bwd = jax.jit(pl.forward_to_outputs), jax.jit(pl.output_cotangents, static_argnums=3)
        stages = {"forward": lambda: fwd(params, x, zeros),
                  "forward+backward to outputs": lambda: fwd_bwd(params, x, y, cfg.loss)}
        for layer, rule in pl.RULES.items():
            jitted = jax.jit(rule)
            stages[f"rule {layer}"] = lambda layer=layer, jitted=jitted: jitted(inputs[layer], cots[layer])
    return [(name, _median_ms(fn, sync, cfg.repeats)) for name, fn in stages.items()]


# Parameter subsets whose gradients isolate one piece of the backward pass (the rest is held constant).
SUBSETS: dict[str, tuple[str, ...]] = {
    "grad w.r.t. fc1+fc2 only (no conv backward)": ("fc1", "fc2"),
    "grad w.r.t. conv2 only (+ conv2 weight-grad conv)": ("conv2",),
    "grad w.r.t. conv1 only (+ conv2 input-grad conv)": ("conv1",),
    "grad w.r.t. all (the batched reference)": ("conv1", "conv2", "fc1", "fc2"),
}


def reference_stages(cfg: Config) -> list[tuple[str, tuple[float, float]]]:
    """Median (wall, CPU) ms of the forward and of the batched gradient w.r.t. each of ``SUBSETS``."""
    ps, _, (params, x, y) = _setup(cfg)
    if cfg.framework == "torch":
        import torch
        from torch.func import grad

        sync = lambda v: v  # noqa: E731 - CPU ops are synchronous

        def forward():
            with torch.no_grad():
                return ps.batch_loss(params, x, y, cfg.loss)

        def subset_grad(layers):
            sub = {k: v for k, v in params.items() if k.split(".")[0] in layers}
            rest = {k: v for k, v in params.items() if k not in sub}
            g = grad(lambda sub: ps.batch_loss({**rest, **sub}, x, y, cfg.loss))
            return lambda: g(sub)
    else:
        import jax
        from flax import nnx

        # Everything is a jit argument: closed-over arrays would be constants that XLA folds at compile time.
        sync = jax.block_until_ready
        jitted_loss = jax.jit(lambda p, x, y: ps.batch_loss(p, x, y, cfg.loss))
        forward = lambda: jitted_loss(params, x, y)  # noqa: E731
        pure = nnx.to_pure_dict(params)

        def subset_grad(layers):
            sub = {k: v for k, v in pure.items() if k in layers}
            rest = {k: v for k, v in pure.items() if k not in layers}

            def loss_of(sub, rest, x, y):
                state = jax.tree.map(lambda v: v, params)
                nnx.replace_by_pure_dict(state, {**rest, **sub})
                return ps.batch_loss(state, x, y, cfg.loss)

            g = jax.jit(jax.grad(loss_of))
            return lambda: g(sub, rest, x, y)

    stages = {"forward only": forward, **{name: subset_grad(layers) for name, layers in SUBSETS.items()}}
    return [(name, _median_ms(fn, sync, cfg.repeats)) for name, fn in stages.items()]


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    print(f"# {cfg.framework} {cfg.method} B={cfg.batch_size} {cfg.dtype} loss={cfg.loss}")
    print(torch_op_table(cfg) if cfg.framework == "torch" else jax_compiled_ops(cfg))
    if cfg.method == "per_layer":
        print("\nper_layer stages, each timed on its own (median ms):      wall       CPU")
        for name, (wall, cpu) in per_layer_stages(cfg):
            print(f"  {name:50s} {wall:9.1f} {cpu:9.1f}")
    if cfg.method == "reference":
        print("\nbatched reference stages, each timed on its own (median ms): wall       CPU")
        for name, (wall, cpu) in reference_stages(cfg):
            print(f"  {name:50s} {wall:9.1f} {cpu:9.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
