"""``python -m compare.run``: agreement check, then a benchmark sweep of per-sample gradients in both frameworks.

Timed kinds (``compare.benchmark.targets.TARGETS``): the batched reference gradient, every per-sample method, and
one training step of each side's ``dp`` module: non-private (``sgd``), DP-SGD with each clipping strategy
(``dp_sgd`` = materialise per-sample gradients, ``dp_ghost`` = ghost norms + a second backward, ``dp_bk`` =
book-keeping), and each side's maintained library (``opacus_ghost``, ``jax_privacy``). Each private step's ratio
to ``sgd`` is the DP overhead printed per framework and batch size and drawn in DIR/figures/dp_overhead.

Every point (framework, kind, method, batch size, dtype) runs in its own subprocess with one shared environment,
is appended to DIR/points.jsonl as soon as it is measured, and ends up in DIR/results.json with the agreement
report, the measured floor and the run's meta; a summary table and DIR/figures/ follow, and a short verdict ends
the output (do they agree; which framework is faster at per-sample gradients and by how much; each framework's
best private step as a multiple of its SGD step).

Nothing is overwritten: a run into a directory that holds an earlier run moves that run's files to
DIR/runs/<date>-<time>/ first; --resume continues it instead (every finished point, and each workload's saved
agreement report in DIR/agreement/, is kept and not run again). Ctrl-C or SIGTERM stops the measuring process,
removes its temporary files and prints what was kept and the command that resumes.

examples:
  python -m compare.run                                  # quick: agreement + B=32, every method and DP step (~2.5 min idle)
  python -m compare.run --full                           # the paper sweep: B=16..1024, every method
  python -m compare.run --batch-sizes 64,256 --methods loop,vmap --frameworks torch,jax   # no dp steps
  python -m compare.run --methods per_layer,dp_bk        # per_layer, and the dp steps sgd and dp_bk
  python -m compare.run --batch-sizes 64,256,1024 --methods sgd,dp_sgd,dp_ghost,dp_bk,opacus_ghost,jax_privacy
  python -m compare.run --full --resume --out results/   # continue a killed run, skipping finished points
  python -m compare.run --device cuda --dtype float32 --repeats 20
  python -m compare.run --devices 2 --methods dist_per_sample,dist_dp_bk --batch-sizes 16   # data-parallel, B=16/device
  python -m compare.run --device cuda --full            # GPU: B=16..8192, one process per (framework, method)
  python -m compare.run --device cuda --agreement-only --dtype float64   # agreement check alone -> DIR/agreement.json
  python -m compare.run --model mnist_cnn,embed          # other workloads (compare.spec.MODELS; 'all' for every one)
  python -m compare.run --suite fast-dpsgd --out results/suite   # the peer study's workloads (every registered one), B=16..256

Workloads (``--model``, default seed_cnn): each gets its own weights file (DIR/weights_seed0.safetensors for the
seed CNN, DIR/weights_<model>_seed0.safetensors for the others), its own agreement check and its points; every
record carries ``model``. A method that cannot apply to a workload is recorded as ``not_applicable`` with why.

On a GPU (``--device cuda``) both frameworks must see it (``python -m compare.env --device cuda`` says why not;
this exits 2 with that one line), TF32 is off on both sides, ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` is set for
this process and every point (``compare.env.share_gpu_memory``; recorded in meta), and points are grouped: one
process per (framework, kind, method) runs its batch sizes ascending (``--group-points``; see
``compare.benchmark.point``).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from dataclasses import asdict
from pathlib import Path

from compare.arguments import ExtendUnique, csv_list, models_arg
from compare.paths import input_file, output_dir
from compare.spec import DEFAULT_LOSS, DEFAULT_MODEL, DTYPES, LOSSES, DeviceError
from compare.weights import WeightsError, init_weights, load_weights, save_weights

from compare.benchmark.agreement_stage import agreement_only, read_agreement_file, run_agreement_check
from compare.benchmark.run_state import interrupted_line, prepare_out, start_lines
from compare.benchmark.verdict import COLUMNS_HELP, format_verdict
from compare.interrupt import exit_status, interruptible, kill_children, signal_name
from compare.logs import setup_logging
from compare.benchmark.config import (
    FULL_BATCH_SIZES, FULL_GPU_BATCH_SIZES, GROUPINGS, MALLOC_ENV, QUICK_BATCH_SIZES, SUITES, Config,
    batch_sizes_for,
)

log = logging.getLogger("compare.run")

def _csv(kind: type, choices: tuple[str, ...] | None = None):
    return csv_list(kind, choices, positive=kind is int)


_models = models_arg  # an empty entry or an unknown name: one usage line


def _env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def parse_args(argv: list[str] | None = None) -> Config:
    from compare.frameworks import FRAMEWORKS

    p = argparse.ArgumentParser(prog="python -m compare.run", description=__doc__, epilog=COLUMNS_HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true", help=f"paper sweep: batch sizes {FULL_BATCH_SIZES} on cpu, "
                   f"{FULL_GPU_BATCH_SIZES} on cuda, >= 5 repeats and >= 1 s per point (the largest batches that "
                   "do not fit are recorded as oom or skipped)")
    p.add_argument("--batch-sizes", type=_csv(int), help=f"comma-separated (quick default {QUICK_BATCH_SIZES})")
    p.add_argument("--frameworks", type=_csv(str, FRAMEWORKS), nargs="+", action=ExtendUnique, default=FRAMEWORKS,
                   help="comma- or space-separated (default: torch,jax)")
    p.add_argument("--methods", type=_csv(str), help="methods to time, comma-separated (default: all): per-sample "
                   "methods of each framework's METHODS, and the DP steps sgd, dp_sgd, dp_ghost, dp_bk, opacus_ghost "
                   "(torch), jax_privacy (jax) (naming a private step also runs sgd, the denominator of its "
                   "overhead); the batched reference always runs")
    p.add_argument("--model", type=_models, help="workload(s): NAME[,NAME...] or 'all' (default seed_cnn; names: "
                   f"{', '.join(SUITES['fast-dpsgd']['models'])})")
    p.add_argument("--suite", choices=tuple(SUITES), help="a named study: presets for --model, --batch-sizes and "
                   "--methods (explicit options win); fast-dpsgd = every workload, B=16..256, sgd, every private "
                   "step, the peers, the fast per-sample methods")
    p.add_argument("--dtype", choices=DTYPES, default="float32")
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when torch sees a GPU, else cpu")
    p.add_argument("--repeats", type=int, help="minimum timed calls per point (quick 3, full 5)")
    p.add_argument("--min-seconds", type=float, help="minimum timed seconds per point (quick 0.2, full 1.0)")
    p.add_argument("--timeout", type=float, help="seconds before a point is killed (quick 120, full 900)")
    p.add_argument("--weights", type=input_file, help="safetensors weights file (default: create the seed-0 file in --out)")
    p.add_argument("--out", type=output_dir, default=Path("results"), help="output directory (default: results/)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out: reuse its saved agreement "
                   "reports and skip the points it has (without --resume an earlier run is moved to DIR/runs/)")
    p.add_argument("--loss", choices=LOSSES, default=DEFAULT_LOSS)
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic batches")
    p.add_argument("--agreement-batch-size", type=int, default=64, help="batch of the agreement check (default 64)")
    p.add_argument("--no-agreement", action="store_true", help="skip the agreement check (timings only)")
    p.add_argument("--no-figures", action="store_true", help="do not draw DIR/figures/")
    p.add_argument("--malloc", choices=tuple(MALLOC_ENV), default="nonreleasing",
                   help="glibc malloc setting of every point process, both frameworks alike (default nonreleasing)")
    p.add_argument("--env", type=_env_pair, action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment variable for every point process (repeatable), e.g. XLA_FLAGS=...")
    p.add_argument("--group-points", choices=GROUPINGS, default="auto",
                   help="none: a fresh process per point; method: one process per (framework, kind, method), batch "
                   "sizes ascending; auto (default): method on cuda, none on cpu")
    p.add_argument("--budget", type=float, help="seconds for the sweep: points not started by then are recorded as "
                   "skipped (default: no limit)")
    p.add_argument("--agreement-only", action="store_true",
                   help="run the agreement check alone (float32 and float64), write DIR/agreement.json and exit")
    p.add_argument("--agreement-file", type=input_file, help="an agreement.json written by --agreement-only: put it in "
                   "results.json instead of running the check again")
    p.add_argument("--rounds", type=int, default=15, help="minimum interleaved rounds per pair group: a method and "
                   "its baselines (sgd; the batched reference and floor; a peer and our best step) timed in one "
                   "process, order shuffled per round; ratios are medians of per-round ratios with a bootstrap 95%% "
                   "interval (default 15; more narrows wide intervals)")
    p.add_argument("--devices", type=int, help="also time the data-parallel kind (dist_per_sample, dist_dp_bk: "
                   "<fw>_impl.distributed) on N devices, batch sizes per device; on a CPU the N JAX host devices / "
                   "gloo processes share its cores, so this measures overhead, not speed-up")
    a = p.parse_args(argv)
    if a.devices is not None and a.devices < 1:
        p.error(f"--devices must be a positive integer, got {a.devices}")
    if a.agreement_only and (a.agreement_file or a.no_agreement):
        p.error("--agreement-only runs the check: it takes neither --agreement-file nor --no-agreement")
    if a.budget is not None and a.budget <= 0:
        p.error("--budget must be > 0")
    if a.rounds < 2:
        p.error(f"--rounds must be >= 2 (a bootstrap interval needs rounds), got {a.rounds}")
    for name in ("repeats", "agreement_batch_size"):
        if getattr(a, name) is not None and getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    for name in ("timeout", "min_seconds"):
        if getattr(a, name) is not None and getattr(a, name) < 0:
            p.error(f"--{name.replace('_', '-')} must be >= 0")
    suite = SUITES.get(a.suite, {})
    models = a.model or suite.get("models") or (DEFAULT_MODEL,)
    if a.weights is not None and len(models) > 1:
        p.error(f"--weights names one workload's file; --model asks for {len(models)} ({','.join(models)}): "
                "leave --weights out (each workload's file is created in --out) or time one model")
    full = a.full  # presets below; explicit options win
    return Config(
        weights=a.weights, out=a.out,
        batch_sizes=a.batch_sizes or suite.get("batch_sizes") or batch_sizes_for(full, a.device or "cpu"),
        batch_sizes_given=bool(a.batch_sizes or suite),
        frameworks=a.frameworks, methods=a.methods or suite.get("methods"), dtype=a.dtype, device=a.device,
        repeats=a.repeats or suite.get("repeats") or (5 if full else 3),
        min_seconds=a.min_seconds if a.min_seconds is not None else suite.get("min_seconds", 1.0 if full else 0.2),
        timeout=a.timeout or suite.get("timeout") or (900.0 if full else 120.0),
        resume=a.resume, full=full, loss=a.loss, seed=a.seed, agreement_batch_size=a.agreement_batch_size,
        agreement=not a.no_agreement, figures=not a.no_figures, malloc=a.malloc, env=tuple(a.env),
        group_points=suite.get("group_points", a.group_points) if a.group_points == "auto" else a.group_points,
        budget=a.budget, agreement_only=a.agreement_only, agreement_file=a.agreement_file,
        devices=a.devices, models=models, suite=a.suite, rounds=a.rounds,
        cpu_batch_sizes=() if a.batch_sizes else tuple(suite.get("cpu_batch_sizes", {}).items()),
    )


def weights_file(out: Path, model: str = DEFAULT_MODEL) -> Path:
    """Where a run keeps a workload's seed-0 weights (the seed CNN's name predates the other workloads)."""
    return out / ("weights_seed0.safetensors" if model == DEFAULT_MODEL else f"weights_{model}_seed0.safetensors")


def resolve_weights(cfg: Config, model: str | None = None) -> tuple[Path, dict]:
    """The weights file of ``model`` (default: the run's first) and its validated contents; ``--weights`` must be
    that workload's (``WeightsError`` names the workload it is of)."""
    model = model or cfg.models[0]
    if cfg.weights is not None:
        return cfg.weights, load_weights(cfg.weights, model=model)
    path = weights_file(cfg.out, model)
    if not path.exists():
        save_weights(path, init_weights(0, model=model), model=model)
        log.info("created the seed-0 weights file of %s at %s", model, path)
    else:
        log.info("using existing weights file %s", path)
    return path, load_weights(path, model=model)


def resolve_device(device: str | None) -> str:
    if device is not None:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def point_env(cfg: Config) -> dict[str, str]:
    env = dict(os.environ)
    env.update(MALLOC_ENV[cfg.malloc])
    env.update(dict(cfg.env))
    root = str(Path(__file__).resolve().parents[2])  # points import compare/ from this checkout
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


def prepare_device(cfg: Config) -> tuple[Config, str]:
    """Resolve the device; on cuda: share GPU memory (before JAX loads), require a GPU on every framework of the
    run (``DeviceError``, one line), and take the GPU's default batch sizes for ``--full``."""
    device = resolve_device(cfg.device)
    if device.startswith("cuda"):
        from compare.env import require_gpu, share_gpu_memory

        share_gpu_memory()
        require_gpu(cfg.frameworks)
        if not cfg.batch_sizes_given:
            cfg = dataclasses.replace(cfg, batch_sizes=batch_sizes_for(cfg.full, device))
    return cfg, device


def _config_json(cfg: Config) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    cfg = parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    with interruptible():
        try:
            return _run(cfg, argv)
        except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM: the children are gone, the temporary files too
            kill_children()
            print(interrupted_line(cfg, argv, signal_name(err)), file=sys.stderr)
            return exit_status(err)


def _run(cfg: Config, argv: list[str]) -> int:
    from compare.benchmark.sweep import plan_points, run_sweep

    if cfg.devices is not None:  # before JAX is imported anywhere in this process or the points
        from compare.benchmark.targets import DEVICES_ENV
        from compare.devices import force_host_devices

        force_host_devices(cfg.devices)
        os.environ[DEVICES_ENV] = str(cfg.devices)  # read by the distributed kind here and in every point

    env = point_env(cfg)
    try:  # every check before anything is written: device, methods, --agreement-file, --resume
        cfg, device = prepare_device(cfg)
        if cfg.devices is not None:
            from compare.frameworks import side

            for fw in cfg.frameworks:
                side(fw).check_devices(cfg.devices, device)
        weights_paths = {m: cfg.weights or weights_file(cfg.out, m) for m in cfg.models}
        plan = [] if cfg.agreement_only else plan_points(cfg, weights_paths, device)
        if cfg.agreement_file is not None:
            read_agreement_file(cfg.agreement_file)
        weights = {m: resolve_weights(cfg, m)[1] for m in cfg.models}
        prepare_out(cfg, env)
    except (DeviceError, WeightsError, ValueError, OSError) as err:  # bad input or no GPU: one line, no traceback
        log.error("%s", err)
        return 2
    for line in start_lines(cfg, plan, weights, device):
        log.info("%s", line)
    if cfg.agreement_only:
        return agreement_only(cfg, weights, device, argv)
    agreement, ok = run_agreement_check(cfg, weights, device)
    results_path = run_sweep(cfg, plan, env=env, device=device, agreement=agreement, argv=argv,
                             config=_config_json(cfg))
    if cfg.figures:
        from compare.benchmark.figures import make_figures

        figures = make_figures(results_path)
        folders = sorted({str(p.parent) for p in figures})
        log.info("%d figures (pdf, png) in %s", len(figures), ", ".join(folders))
    print(format_verdict(json.loads(results_path.read_text())))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
