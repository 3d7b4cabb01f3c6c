"""``compare.train``'s options: the frozen ``Config`` parsed from the command line, and every check of it that runs
before any data is read or any step is taken (``check_config``; ``check_parallel`` imports the frameworks)."""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from contract.devices import DevicesError, check_count, force_host_devices
from contract.spec import is_mixed
from compare.arguments import ExtendUnique, csv_list, models_arg
from compare.frameworks import FRAMEWORKS, side
from compare.paths import input_file, output_dir
from compare.spec import DEFAULT_MODEL, DTYPES, MODELS
from compare.training import processes as procs
from compare.training.privacy import ACCOUNTANTS, DPConfigError, check_delta, check_dp_params

DESCRIPTION = ("``python -m compare.train``: DP-SGD in PyTorch and JAX/optax from the same weights, batches and "
               "noise.")
# = <fw>_impl.dp.CLIPPINGS (tests/test_distributed.py checks), listed here so --help imports no framework
CLIPPINGS: tuple[str, ...] = ("materialize", "ghost", "bk")
DEFAULT_CLIPPING = "bk"  # the fastest exact strategy of both dp modules (paper/cpu-suite: dp_bk is the best private step)


@dataclass(frozen=True)
class Config:
    epochs: int
    steps: int | None
    batch_size: int
    lr: float
    clip: float
    noise_multiplier: float
    delta: float
    data: Path | None
    out: Path
    dtype: str
    device: str | None
    weights: Path | None
    seed: int
    accountant: str
    frameworks: tuple[str, ...]
    devices: int = 1
    clipping: str = DEFAULT_CLIPPING
    models: tuple[str, ...] = (DEFAULT_MODEL,)  # the selection (--model)
    model: str = DEFAULT_MODEL  # this run's workload (one of ``models``)
    processes: int = 1
    step_timeout: float = procs.DEFAULT_TIMEOUT_S
    resume: bool = False
    checkpoint_every: int = 1
    argv: tuple[str, ...] = ()  # as given: --processes starts each process with it (not part of the report)


def run_dir(out: Path, models: tuple[str, ...], model: str) -> Path:
    """``--out`` itself for the default selection (the seed alone, as before --model), else ``--out/<model>``."""
    return out if models == (DEFAULT_MODEL,) else out / model


def parse_args(argv: list[str] | None = None) -> Config:
    p = argparse.ArgumentParser(prog="python -m compare.train", description=DESCRIPTION)
    p.add_argument("--model", type=models_arg, default=(DEFAULT_MODEL,), metavar="NAME[,NAME...]|all",
                   help=f"workloads to train, one run each (default: {DEFAULT_MODEL}; one of {', '.join(MODELS)}). "
                   "seed_cnn/mnist_cnn train on digits; the others on a SYNTHETIC teacher task (no packaged data)")
    p.add_argument("--epochs", type=int, default=5, help="passes over the training split (default: 5)")
    p.add_argument("--steps", type=int, default=None, help="number of steps; overrides --epochs")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.5, help="SGD learning rate (default: 0.5)")
    p.add_argument("--clip", type=float, default=1.0, help="per-example L2 clipping norm (default: 1.0)")
    p.add_argument("--noise-multiplier", type=float, default=0.8, help="noise std / clip (default: 0.8)")
    p.add_argument("--delta", type=float, default=1e-5, help="target delta of (epsilon, delta)-DP")
    p.add_argument("--data", type=Path, default=None, help="local MNIST for the 28x28 workloads: a directory of IDX "
                   "files or an .npz (default: scikit-learn's packaged 8x8 digits upsampled to 28x28)")
    p.add_argument("--out", type=output_dir, default=Path("results/train"), help="output directory")
    p.add_argument("--dtype", choices=DTYPES, default="float32")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None)
    p.add_argument("--weights", type=input_file, default=None,
                   help="safetensors weights of the one --model (default: that workload's seed-0 init)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data split, batch order and noise")
    p.add_argument("--accountant", choices=ACCOUNTANTS, default="prv", help="Opacus accountant (default: prv)")
    p.add_argument("--frameworks", nargs="+", type=csv_list(str, FRAMEWORKS), action=ExtendUnique,
                   default=FRAMEWORKS, help="comma- or space-separated (default: torch,jax)")
    p.add_argument("--devices", type=int, default=1, help="data-parallel replicas (GPUs, or JAX host devices / "
                   "gloo processes on a CPU); default 1. torch with N > 1: spawned here unless run by torchrun")
    p.add_argument("--clipping", choices=CLIPPINGS, default=DEFAULT_CLIPPING,
                   help=f"per-example clipping strategy of the DP step (default: {DEFAULT_CLIPPING}, the fastest exact)")
    p.add_argument("--processes", type=int, default=1, help="data-parallel processes, each started as its own "
                   "host would be (torchrun --nnodes N / jax.distributed), one device each; default 1")
    p.add_argument("--step-timeout", type=float, default=procs.DEFAULT_TIMEOUT_S, help="--processes: seconds "
                   f"without a finished step before a process counts as hung (default: {procs.DEFAULT_TIMEOUT_S:g})")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoints (each "
                   "framework's last saved step; refused if the configuration, versions, world size or weights differ)")
    p.add_argument("--checkpoint-every", type=int, default=1, metavar="K", help="save the training state after "
                   "every K-th step and after the last (default: 1; compare.training.checkpoint)")
    a = p.parse_args(argv)
    return Config(a.epochs, a.steps, a.batch_size, a.lr, a.clip, a.noise_multiplier, a.delta, a.data, a.out,
                  a.dtype, a.device, a.weights, a.seed, a.accountant, tuple(dict.fromkeys(a.frameworks)),
                  a.devices, a.clipping, a.model, a.model[0], a.processes, a.step_timeout, a.resume,
                  a.checkpoint_every,
                  tuple(sys.argv[1:] if argv is None else argv))


def check_config(cfg: Config) -> None:
    """Every option checked before any data is read or any step is taken."""
    if cfg.batch_size < 1:
        raise DPConfigError(f"--batch-size must be a positive integer, got {cfg.batch_size}")
    if cfg.steps is not None and cfg.steps < 1:
        raise DPConfigError(f"--steps must be a positive integer, got {cfg.steps}")
    if cfg.steps is None and cfg.epochs < 1:
        raise DPConfigError(f"--epochs must be a positive integer, got {cfg.epochs}")
    check_dp_params(lr=cfg.lr, clip=cfg.clip, noise_multiplier=cfg.noise_multiplier)
    check_delta(cfg.delta)
    check_count(cfg.devices)
    if cfg.processes < 1:
        raise DevicesError(f"--processes must be a positive integer, got {cfg.processes}")
    if cfg.processes > 1 and cfg.devices > 1:
        raise DevicesError(f"--processes {cfg.processes} runs one device per process; drop --devices {cfg.devices}")
    if cfg.checkpoint_every < 1:
        raise DPConfigError(f"--checkpoint-every must be a positive integer, got {cfg.checkpoint_every}")
    if cfg.step_timeout <= 0:
        raise DPConfigError(f"--step-timeout must be positive, got {cfg.step_timeout}")
    if cfg.weights is not None and len(cfg.models) > 1:
        raise DPConfigError(f"--weights is one workload's file; give one --model, not {','.join(cfg.models)}")
    if is_mixed(cfg.dtype) and cfg.devices > 1:
        raise DevicesError(f"--dtype {cfg.dtype} runs on one device: <fw>_impl.distributed's step computes in the "
                           "parameters' dtype; use --devices 1")


def check_parallel(cfg: Config) -> None:
    """Each framework can run ``--devices`` replicas here (imports the frameworks; runs before any data is read)."""
    if cfg.devices > 1 and "jax" in cfg.frameworks:
        force_host_devices(cfg.devices)  # before JAX is imported
    replicas = cfg.devices * cfg.processes
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) != replicas:
        raise DevicesError(f"torchrun started {os.environ['WORLD_SIZE']} processes but --devices x --processes is "
                           f"{replicas}")
    for fw in cfg.frameworks:
        side(fw).check_devices(cfg.devices, cfg.device)
