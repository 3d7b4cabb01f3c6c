"""``python -m compare.profile``: where one per-sample method spends its time, so analyses cite profiles.

  torch: ``torch.profiler`` over ``--repeats`` warm calls, the top ops by self CPU time (key_averages);
  jax:   the ops XLA compiled (convolutions with their group counts, dots, fusions) with shapes and the
         compiler's FLOP / byte estimates (XLA:CPU has no per-op timer; jax.profiler traces need xprof);
  per_layer, both frameworks: wall time of each stage (forward, forward+backward to the layer outputs,
         each layer's rule), timed separately after a warm-up;
  reference, both frameworks: the forward alone, then the batched gradient w.r.t. subsets of the parameters
         (``subsets(model)``: a workload's hand-picked ``CURATED_SUBSETS``, e.g. the seed CNN's fc only / conv2
         only / conv1 only, which isolate its convolution backward passes on any backend; otherwise each
         parameterised layer alone, then all).
``--dtype bfloat16`` profiles the mixed-precision computation (float32 parameters, bfloat16 compute: the same
policy as ``compare.run --dtype bfloat16``, docs/precision.md); every header and record names its dtype.
``--model NAME[,NAME...]|all`` (default seed_cnn) profiles each workload in turn; every section header, and every
record of ``--json``, names its model. The per_layer stages come from the workload's own layers (one rule stage
per layer call site); a method that does not apply to a workload (``applicable_methods``) is reported as such
for that workload and skipped (and rejected up front if it applies to none of them).
Example: ``python -m compare.profile --framework torch --method per_layer --batch-size 256 --model seed_cnn,ffnn``
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from compare.provenance import command_line, provenance
from compare.arguments import models_arg
from compare.frameworks import FRAMEWORKS, side
from compare.paths import output_file
from compare.spec import DEFAULT_LOSS, DEFAULT_MODEL, DTYPES, LOSSES, MODELS, make_batch, storage_dtype
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
    models: tuple[str, ...] = (DEFAULT_MODEL,)  # the selection (--model)
    model: str = DEFAULT_MODEL  # the workload being profiled (one of ``models``)
    json: Path | None = None


def not_applicable(framework: str, method: str, model: str) -> str | None:
    """Why ``method`` does not apply to ``model`` in ``framework`` (None: it applies; 'reference' always does)."""
    if method == "reference":
        return None
    return side(framework).applicable_methods(model).get(method)


def parse_args(argv: list[str] | None = None) -> Config:
    p = argparse.ArgumentParser(prog="python -m compare.profile", description=__doc__.splitlines()[0])
    p.add_argument("--framework", choices=FRAMEWORKS, required=True)
    p.add_argument("--model", type=models_arg, default=(DEFAULT_MODEL,), metavar="NAME[,NAME...]|all",
                   help=f"workloads to profile in turn (default: {DEFAULT_MODEL}; one of {', '.join(MODELS)})")
    p.add_argument("--json", type=output_file, default=None, help="also write the stage timings as JSON records "
                   "(model, framework, method, section, stage, wall_ms, cpu_ms) to this file")
    p.add_argument("--method", default="per_layer", help="a per-sample method, or 'reference' (batched gradient)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--loss", choices=LOSSES, default=DEFAULT_LOSS)
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="bfloat16: float32 parameters and inputs, "
                   "bfloat16 compute (docs/precision.md), as compare.run --dtype bfloat16")
    p.add_argument("--repeats", type=int, default=3, help="profiled calls after one warm-up call")
    p.add_argument("--top", type=int, default=15, help="rows of the op table")
    a = p.parse_args(argv)
    if a.batch_size < 1 or a.repeats < 1 or a.top < 1:
        p.error("--batch-size, --repeats and --top must be positive")
    ps = side(a.framework)
    if a.method != "reference" and a.method not in ps.METHODS:
        p.error(f"unknown {a.framework} method {a.method!r}; expected 'reference' or one of {ps.METHODS}")
    reasons = {m: not_applicable(a.framework, a.method, m) for m in a.model}
    if all(reasons.values()):
        p.error(f"{a.framework} method {a.method!r} applies to none of the models: "
                + "; ".join(f"{m}: {r}" for m, r in reasons.items()))
    return Config(a.framework, a.method, a.batch_size, a.loss, a.dtype, a.repeats, a.top, a.model, a.model[0], a.json)


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
    ps = side(cfg.framework)
    x, y = make_batch(cfg.batch_size, seed=0, dtype=storage_dtype(cfg.dtype), model=cfg.model)
    args = ps.native_inputs(init_weights(0, cfg.model), x, y, dtype=cfg.dtype, device="cpu", model=cfg.model)
    fn = (ps.reference_fn(loss=cfg.loss, model=cfg.model, dtype=cfg.dtype) if cfg.method == "reference"
          else ps.native_fn(cfg.method, loss=cfg.loss, model=cfg.model, dtype=cfg.dtype))
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
    """Median (wall, CPU) ms of each stage of ``per_layer``: forward, forward+backward to outputs, each layer's rule
    (one stage per call site of each of the workload's parameterised layers; "rule conv1" etc. for the seed)."""
    _, _, (params, x, y) = _setup(cfg)
    stages, sync = side(cfg.framework).per_layer_stages(params, x, y, cfg.loss, cfg.model, dtype=cfg.dtype)
    return [(name, _median_ms(fn, sync, cfg.repeats)) for name, fn in stages.items()]


# The seed CNN's hand-picked parameter subsets (seed only; the rest held constant): each isolates one of its
# convolution backward passes. Other workloads take ``layer_subsets``.
SEED_SUBSETS: dict[str, tuple[str, ...]] = {
    "grad w.r.t. fc1+fc2 only (no conv backward)": ("fc1", "fc2"),
    "grad w.r.t. conv2 only (+ conv2 weight-grad conv)": ("conv2",),
    "grad w.r.t. conv1 only (+ conv2 input-grad conv)": ("conv1",),
    "grad w.r.t. all (the batched reference)": ("conv1", "conv2", "fc1", "fc2"),
}
# Hand-picked subsets by workload name, for the workloads that have them.
CURATED_SUBSETS: dict[str, dict[str, tuple[str, ...]]] = {"seed_cnn": SEED_SUBSETS}
ALL_STAGE = "grad w.r.t. all (the batched reference)"


def layer_subsets(model: str) -> dict[str, tuple[str, ...]]:
    """Each parameterised layer (top-level canonical name prefix) of a workload alone, then all of them."""
    layers = tuple(dict.fromkeys(k.split(".")[0] for k in MODELS[model].param_shapes))
    return {**{f"grad w.r.t. {layer} only": (layer,) for layer in layers}, ALL_STAGE: layers}


def subsets(model: str = DEFAULT_MODEL) -> dict[str, tuple[str, ...]]:
    """The reference stages' parameter subsets of a workload: its ``CURATED_SUBSETS`` entry if it has one, else
    ``layer_subsets``."""
    return dict(CURATED_SUBSETS[model]) if model in CURATED_SUBSETS else layer_subsets(model)


def reference_stages(cfg: Config) -> list[tuple[str, tuple[float, float]]]:
    """Median (wall, CPU) ms of the forward and of the batched gradient w.r.t. each of ``subsets(model)``."""
    _, _, (params, x, y) = _setup(cfg)
    stages, sync = side(cfg.framework).reference_stages(params, x, y, cfg.loss, cfg.model, subsets(cfg.model),
                                                        dtype=cfg.dtype)
    return [(name, _median_ms(fn, sync, cfg.repeats)) for name, fn in stages.items()]


def profile_model(cfg: Config) -> list[dict]:
    """Print one workload's profile; return its stage timings as records (each naming model and framework)."""
    print(f"# model={cfg.model} {cfg.framework} {cfg.method} B={cfg.batch_size} {cfg.dtype} loss={cfg.loss}")
    base = {"model": cfg.model, "framework": cfg.framework, "method": cfg.method, "batch_size": cfg.batch_size,
            "dtype": cfg.dtype, "loss": cfg.loss, "repeats": cfg.repeats}
    reason = not_applicable(cfg.framework, cfg.method, cfg.model)
    if reason is not None:
        print(f"model {cfg.model}: {cfg.framework} method {cfg.method!r} {reason}")
        return [{**base, "section": None, "not_applicable": reason}]
    print(torch_op_table(cfg) if cfg.framework == "torch" else jax_compiled_ops(cfg))
    records: list[dict] = []
    if cfg.method in ("per_layer", "reference"):
        section, timed = (("per_layer", per_layer_stages(cfg)) if cfg.method == "per_layer"
                          else ("reference", reference_stages(cfg)))
        print(f"\n{'per_layer' if section == 'per_layer' else 'batched reference'} stages of {cfg.model}, "
              f"each timed on its own (median ms): {'wall':>10} {'CPU':>9}")
        for name, (wall, cpu) in timed:
            print(f"  {name:50s} {wall:9.1f} {cpu:9.1f}")
            records.append({**base, "section": section, "stage": name, "wall_ms": wall, "cpu_ms": cpu})
    return records


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    records: list[dict] = []
    for i, model in enumerate(cfg.models):
        if i:
            print()
        records += profile_model(replace(cfg, model=model))
    if cfg.json is not None:
        cfg.json.parent.mkdir(parents=True, exist_ok=True)
        meta = provenance(command_line(argv, "python -m compare.profile"))
        cfg.json.write_text(json.dumps({"meta": meta, "records": records}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
