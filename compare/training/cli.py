"""``python -m compare.train``: DP-SGD in PyTorch and JAX/optax from the same weights, batches and noise.

Both frameworks start from one canonical weights dict, see the same seeded batch order and add the *same*
Gaussian noise (one numpy standard normal draw per step, converted to each side's layout), so their loss
curves should overlay step by step (exactly up to float rounding with ``--noise-multiplier 0``).
Writes, in ``--out``: ``train_progress.jsonl`` (one line per step, flushed as it goes, so an interrupted run
keeps what it did), ``train.json`` (after each framework, then final) and ``train_loss.{pdf,png}``; an earlier
run's files there are first moved to ``--out/runs/<date>-<time>/`` (``compare.rundir``), never overwritten.
Each framework's training state is checkpointed to ``checkpoint/<framework>.safetensors`` (every
``--checkpoint-every`` K-th step and the last); ``--resume`` continues a stopped run from there, refusing a
different configuration, version set, world size or initial weights (``compare.training.checkpoint``).

``--model NAME[,NAME...]|all`` (default ``seed_cnn``) picks the workloads (``compare.spec.MODELS``), one run each,
all checked before the first one starts. ``--model seed_cnn`` alone writes into ``--out`` itself, as before; any
other selection writes each run into ``--out/<model>/`` (so ``--model logreg`` never overwrites the seed's
results). Every progress line, ``train.json`` (top level, ``config`` and ``meta``) and the figure's title carry
``model``; ``meta["data"]`` says what the run trained on.

Data (see ``compare.training.data``): the 28x28 workloads (``seed_cnn``, ``mnist_cnn``) train on real digits
(scikit-learn's packaged digits, or ``--data`` local MNIST). The others (``logreg``, ``ffnn``, ``cifar10_cnn``,
``embed``) have no packaged dataset and there is no network to fetch one (Adult, CIFAR-10, IMDb), so they train on
a seeded *synthetic* teacher task of their input shape: labels from a fixed random teacher network of the same
workload. We chose that over refusing to train: what this CLI compares is the two frameworks' DP-SGD on the same
workload, batches and noise (their loss curves must overlay), which a learnable synthetic task shows as well as a
real one; refusing would leave four of the six workloads untested end to end. It is named as synthetic everywhere
(dataset name ``synthetic-teacher:<model>``, ``meta["data"]`` starting "SYNTHETIC", the figure title) so that
no accuracy of it is mistaken for a real-data result.

``--devices N`` trains data-parallel (``<fw>_impl.distributed``) on the same batches and noise, so the loss curves
equal the ``--devices 1`` ones (float64: to ~1e-15). JAX: a mesh of N devices in this process (on a CPU, N host
devices are forced through XLA_FLAGS before JAX is imported). torch: N processes in a gloo (CPU) / NCCL (GPU)
group, spawned here, or started by torchrun, which runs this same code in every process; only rank 0 writes files
and runs JAX:
  torchrun --nproc-per-node N -m compare.train --devices N ...
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import statistics
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from types import ModuleType
from typing import Callable, Iterator, TextIO

import numpy as np

from contract.devices import DevicesError
from contract.spec import storage_dtype
from compare.env import require_gpu, share_gpu_memory
from compare.lock import versions
from compare.interrupt import exit_status, interruptible, kill_children, signal_name
from compare.logs import setup_logging
from compare.rundir import keep_earlier_run
from compare.training.options import (  # noqa: F401 - CLIPPINGS: the command line's, importable from here too
    CLIPPINGS, Config, check_config, check_parallel, parse_args, run_dir)
from compare.training.report import kept_line, meta, plot, write_json
from compare.training.data import DataError, Dataset, load_for_model
from compare.training import checkpoint as ckpt
from compare.training import processes as procs
from compare.training.streams import NoiseStream, Streams
from contract.communication import step_bytes
from compare.frameworks import side
from compare.training.privacy import DPConfigError, epsilon
from compare.spec import DEFAULT_LOSS, DEFAULT_MODEL, DeviceError
from compare.weights import WeightsError, init_weights, load_weights

log = logging.getLogger("compare.train")

SGD_BASELINE_REPS = 5  # timed non-private steps per framework, after one warm-up step
EVAL_BATCH = 256


def noise_draws(seed: int, steps: int, noise_multiplier: float,
                model: str = DEFAULT_MODEL) -> Iterator[dict[str, np.ndarray] | None]:
    """One canonical standard normal draw per step, shared by both frameworks (None when there is no noise)."""
    stream = NoiseStream(seed, noise_multiplier, model)  # a stream independent of the batch order's
    for _ in range(steps):
        yield stream.next()


def accuracy(dp: ModuleType, params: object, data: Dataset, cfg: Config) -> float:
    """Test-split accuracy of native ``params``, predicted in chunks of ``EVAL_BATCH``."""
    hits = 0
    for start in range(0, len(data.y_test), EVAL_BATCH):
        x, y = data.x_test[start : start + EVAL_BATCH], data.y_test[start : start + EVAL_BATCH]
        xn = dp.native_batch(x, y, dtype=cfg.dtype, device=cfg.device, model=cfg.model)[0]
        hits += int((dp.predict(params, xn, model=cfg.model) == y).sum())
    return hits / len(data.y_test)


def sgd_step_ms(dp: ModuleType, params: object, data: Dataset, cfg: Config) -> float:
    """Median time of the non-private step on the same batch size: the DP overhead's denominator."""
    step = dp.make_sgd_step(lr=cfg.lr, loss=DEFAULT_LOSS, model=cfg.model, dtype=cfg.dtype)
    x, y = dp.native_batch(data.x_train[: cfg.batch_size], data.y_train[: cfg.batch_size],
                           dtype=cfg.dtype, device=cfg.device, model=cfg.model)
    times = []
    for _ in range(SGD_BASELINE_REPS + 1):
        t0 = time.perf_counter()
        dp.block_until_ready(step(params, x, y))
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times[1:])


def run_steps(fw: str, dp: ModuleType, step: Callable, params: object, data: Dataset, cfg: Config, steps: int,
              progress: TextIO | None, shard: Callable | None = None, start: ckpt.State | None = None,
              save: ckpt.Writer | None = None) -> tuple[object, list[float], list[float]]:
    """DP-SGD steps up to ``steps`` (from ``start``'s, when resuming); every step's loss goes to ``progress``
    (if any) as it happens, then ``save`` (if any) checkpoints the state.

    ``shard(x, y, noise) -> extra step arguments``: the data-parallel placement, done before the clock starts.
    """
    from tqdm import tqdm

    losses: list[float] = [] if start is None else list(start.losses)
    times: list[float] = [] if start is None else list(start.times)
    streams = Streams(len(data.y_train), cfg.batch_size, cfg.seed, cfg.noise_multiplier, cfg.model)
    if start is not None:
        streams.restore(start.streams)
    with tqdm(total=steps, initial=len(losses), desc=f"{fw} DP-SGD", unit="step", file=sys.stderr,
              disable=progress is None) as bar:
        for i in range(len(losses), steps):
            idx, z = streams.next()
            x, y = dp.native_batch(data.x_train[idx], data.y_train[idx], dtype=cfg.dtype, device=cfg.device)
            noise = None if z is None else dp.native_noise(z, dtype=cfg.dtype, device=cfg.device, model=cfg.model)
            args = (x, y, noise) if shard is None else shard(x, y, noise)
            dp.block_until_ready(args)
            procs.beat(i, done=False)
            t0 = time.perf_counter()
            params, loss = dp.block_until_ready(step(params, *args))
            times.append((time.perf_counter() - t0) * 1e3)
            procs.beat(i, done=True)
            losses.append(float(loss))
            if progress is not None:
                progress.write(json.dumps({"model": cfg.model, "framework": fw, "step": i, "loss": losses[-1],
                                           "ms": times[-1]}) + "\n")
                progress.flush()
            if save is not None:
                save(i + 1, params, losses, times, streams.state())
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
            bar.update()
    return params, losses, times


def summarize(fw: str, dp: ModuleType, params: object, data: Dataset, cfg: Config, losses: list[float],
              times: list[float]) -> dict:
    result = {
        "model": cfg.model,
        "loss": losses,
        "devices": cfg.devices,
        "processes": cfg.processes,
        "communication": step_bytes(cfg.model, cfg.dtype, cfg.devices * cfg.processes),
        "clipping": cfg.clipping,
        "test_accuracy": accuracy(dp, params, data, cfg),
        # the first step includes tracing/compilation (JAX jit); it is reported apart
        "step_ms": statistics.median(times[1:] or times),
        "first_step_ms": times[0],
        "sgd_step_ms": sgd_step_ms(dp, params, data, cfg),
    }
    result["dp_overhead"] = result["step_ms"] / result["sgd_step_ms"]
    log.info("%s %s: test accuracy %.4f, DP step %.1f ms on %d device(s), non-private step %.1f ms (x%.2f)",
             cfg.model, fw,
             result["test_accuracy"], result["step_ms"], cfg.devices, result["sgd_step_ms"], result["dp_overhead"])
    return result


def _dp_hparams(cfg: Config) -> dict:
    return {"lr": cfg.lr, "clip": cfg.clip, "noise_multiplier": cfg.noise_multiplier, "loss": DEFAULT_LOSS,
            "clipping": cfg.clipping}


def _writer(fw: str, dp: ModuleType, cfg: Config, steps: int, n: int, identity: dict,
            local: Callable[[object], object] = lambda p: p) -> ckpt.Writer:
    return ckpt.Writer(cfg.out, fw, cfg.model, cfg.checkpoint_every, steps, identity, cfg.batch_size / n,
                       cfg.noise_multiplier, lambda p: dp.to_canonical(local(p), model=cfg.model))


def _train_replica(replica: object, fw: str, data: Dataset, cfg: Config, steps: int,
                   progress_path: str | None, start: ckpt.State | None = None,
                   identity: dict | None = None) -> dict | None:
    """One data-parallel replica's run (``<fw>_impl.distributed.data_parallel`` calls it in every process); the
    writer (rank / process 0) appends to the progress file, checkpoints and summarizes."""
    dp = side(fw)
    writer = replica.writer and progress_path is not None
    save = _writer(fw, dp, cfg, steps, len(data.y_train), identity, replica.local) if writer and identity else None
    with open(progress_path, "a") if writer else contextlib.nullcontext() as progress:
        params, losses, times = run_steps(fw, dp, replica.step, replica.params, data, cfg, steps, progress,
                                          replica.place, start, save)
    return summarize(fw, dp, replica.local(params), data, cfg, losses, times) if writer else None


def train_framework(
    fw: str, weights: dict[str, np.ndarray], data: Dataset, cfg: Config, steps: int, progress: TextIO | None,
    start: ckpt.State | None = None,
) -> dict | None:
    """Run DP-SGD up to ``steps`` in one framework (from ``start``, a checkpoint, when resuming), on
    ``cfg.devices`` devices; losses stream to ``progress``, checkpoints to ``cfg.out`` (the writer's)."""
    dp = side(fw)
    if cfg.processes > 1 and not os.environ.get(procs.WORKER_ENV):
        return procs.run_processes(fw, cfg.model, cfg.processes, list(cfg.argv), cfg.out,
                                   None if progress is None else Path(progress.name), timeout_s=cfg.step_timeout)
    identity = ckpt.identity(asdict(cfg), cfg.devices * cfg.processes, weights)
    params = weights if start is None else start.params  # a float64 run's checkpoint is float64: exact
    if cfg.devices == 1 and not dp.distributed.launched():
        step = dp.make_step(**_dp_hparams(cfg), model=cfg.model, dtype=cfg.dtype)  # bfloat16: float32 masters
        native = dp.to_native(params, storage_dtype(cfg.dtype), cfg.device, model=cfg.model)
        save = None if progress is None else _writer(fw, dp, cfg, steps, len(data.y_train), identity)
        native, losses, times = run_steps(fw, dp, step, native, data, cfg, steps, progress, start=start, save=save)
        return summarize(fw, dp, native, data, cfg, losses, times)
    if progress is not None:
        progress.flush()
    return dp.distributed.data_parallel(_train_replica, cfg.devices, params, fw, data, cfg, steps,
                                        None if progress is None else progress.name, start, identity,
                                        dtype=cfg.dtype, device=cfg.device, model=cfg.model,
                                        hparams=_dp_hparams(cfg), agree=_agreement(dp.distributed.digest, params, cfg))


def _agreement(digest: Callable[[object], str], weights: dict[str, np.ndarray], cfg: Config) -> dict[str, str]:
    """What every process of a data-parallel run must share, refused before the first step if it differs."""
    config = {k: v for k, v in asdict(cfg).items() if k not in ("argv", "out")}
    return {"versions": digest(versions()), "weights": digest(weights), "config": digest(sorted(config.items()))}


def prepare(cfg: Config) -> tuple[Dataset, int, dict[str, np.ndarray], float, dict[str, ckpt.State | None]]:
    """This run's data, step count, initial weights, epsilon and (``--resume``) each framework's checkpoint: every
    check of one workload, before any step."""
    data = load_for_model(cfg.model, cfg.seed, cfg.data)
    n = len(data.y_train)
    if cfg.batch_size > n:
        raise DPConfigError(f"--batch-size {cfg.batch_size} exceeds the {n} training examples of {data.name}")
    steps = cfg.steps if cfg.steps is not None else cfg.epochs * (n // cfg.batch_size)
    weights = init_weights(0, cfg.model) if cfg.weights is None else load_weights(cfg.weights, cfg.model)
    eps = math.nan if os.environ.get(procs.WORKER_ENV) else epsilon(  # --processes: accounted once, by the launcher
        noise_multiplier=cfg.noise_multiplier, sample_rate=cfg.batch_size / n, steps=steps, delta=cfg.delta,
        accountant=cfg.accountant)
    starts = dict.fromkeys(cfg.frameworks) if not cfg.resume else ckpt.check(
        cfg.out, cfg.frameworks, cfg.model, ckpt.identity(asdict(cfg), cfg.devices * cfg.processes, weights), steps)
    return data, steps, weights, eps, starts


def train_model(cfg: Config, data: Dataset, steps: int, weights: dict[str, np.ndarray], eps: float,
                starts: dict[str, ckpt.State | None], memory: dict) -> dict:
    """One workload's run: both frameworks, progress, train.json and the figure, all in ``cfg.out``."""
    n = len(data.y_train)
    log.info("%s on %s: %d train / %d test examples, %d steps of B=%d; epsilon=%.3f at delta=%g (%s accountant)",
             cfg.model, data.name, n, len(data.y_test), steps, cfg.batch_size, eps, cfg.delta, cfg.accountant)
    if data.synthetic:
        log.warning("%s: %s", cfg.model, data.description)
    if not cfg.resume:
        keep_earlier_run(cfg.out, "train")
    cfg.out.mkdir(parents=True, exist_ok=True)
    config = {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
              for k, v in asdict(cfg).items() if k != "argv"}
    report = {"model": cfg.model,
              "meta": {**meta(data, steps, cfg.batch_size / n, cfg.model, list(cfg.argv)), "memory_settings": memory},
              "config": config, "epsilon": eps, "delta": cfg.delta, "complete": False, "frameworks": {}}
    if cfg.resume:  # the steps after each checkpoint are redone: their progress lines go
        ckpt.trim_progress(cfg.out / "train_progress.jsonl", {fw: s.step if s else 0 for fw, s in starts.items()})
    else:
        (cfg.out / "train_progress.jsonl").write_text("")  # then append: spawned torch rank 0 appends to it too
    with open(cfg.out / "train_progress.jsonl", "a") as progress:
        if not cfg.resume:
            progress.write(json.dumps({"model": cfg.model, "data": data.description, "start": report["config"],
                                       "epsilon": eps, "delta": cfg.delta}) + "\n")
        for fw in cfg.frameworks:
            report["frameworks"][fw] = train_framework(fw, weights, data, cfg, steps, progress, starts[fw])
            write_json(cfg.out / "train.json", report)
    report["complete"] = True
    write_json(cfg.out / "train.json", report)
    figs = plot(report, cfg.out)
    print(f"model {cfg.model}: {data.name}" + (" (SYNTHETIC teacher task)" if data.synthetic else ""))
    print(f"{'framework':<10}{'test acc':>10}{'DP step ms':>12}{'SGD step ms':>13}{'overhead':>10}")
    for fw, r in report["frameworks"].items():
        print(f"{fw:<10}{r['test_accuracy']:>10.4f}{r['step_ms']:>12.1f}{r['sgd_step_ms']:>13.1f}"
              f"{r['dp_overhead']:>9.2f}x")
    print(f"epsilon = {eps:.4f} at delta = {cfg.delta:g}" + (" (no noise: no privacy guarantee)"
                                                              if math.isinf(eps) else ""))
    if len(report["frameworks"]) == 2:
        t, j = (np.array(r["loss"]) for r in report["frameworks"].values())
        print(f"max |loss_torch - loss_jax| over {steps} steps: {np.abs(t - j).max():.3e}")
    log.info("wrote %s, %s", cfg.out / "train.json", ", ".join(map(str, figs)))
    return report


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    cfg = parse_args(argv)
    with interruptible():
        try:
            return _main(cfg)
        except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM: one line, what was kept
            kill_children(b"multiprocessing")  # spawned data-parallel torch replicas, if any
            print(interrupted_line(cfg, signal_name(err)), file=sys.stderr)
            return exit_status(err)


def interrupted_line(cfg: Config, signame: str) -> str:
    """What an interrupted training kept, in one line."""
    return kept_line([run_dir(cfg.out, cfg.models, m) for m in cfg.models], signame)


def _main(cfg: Config) -> int:
    worker = os.environ.get(procs.WORKER_ENV)  # one of --processes' processes: one framework, one workload
    if worker:  # its --out layout stays the launcher's (run_dir of the whole --model selection)
        cfg = replace(cfg, frameworks=(worker.split(":")[0],))
    memory = share_gpu_memory()  # both frameworks in this process: before JAX is imported (no 75% preallocation)
    if worker:  # join the others first: jax.distributed must start before any other JAX call
        side(cfg.frameworks[0]).distributed.init(timeout_s=cfg.step_timeout)
    try:
        check_config(cfg)
        if cfg.device == "cuda":
            require_gpu(cfg.frameworks)  # one line naming what each framework lacks, before any work
        check_parallel(cfg)
        runs = []
        for model in cfg.models if not worker else (worker.split(":")[1],):  # all checked before the first step
            run_cfg = replace(cfg, model=model, out=run_dir(cfg.out, cfg.models, model))
            runs.append((run_cfg, *prepare(run_cfg)))
    except (DPConfigError, DataError, WeightsError, DevicesError, DeviceError, ckpt.CheckpointError) as err:
        log.error("%s", err)
        return 2
    if worker:
        return procs.worker(lambda progress: [procs.write_result(train_framework(
            cfg.frameworks[0], weights, data, run_cfg, steps, progress, starts[cfg.frameworks[0]]))
            for run_cfg, data, steps, weights, _, starts in runs])
    if os.environ.get("RANK", "0") != "0":  # a torchrun replica other than rank 0: torch steps only, no files
        for run_cfg, data, steps, weights, _, starts in runs:
            train_framework("torch", weights, data, run_cfg, steps, None, starts["torch"])
        return 0
    try:
        for run_cfg, data, steps, weights, eps, starts in runs:
            train_model(run_cfg, data, steps, weights, eps, starts, memory)
    except procs.ProcessError as err:
        log.error("%s", err)
        return 1
    if len(runs) > 1:
        log.info("trained %d workloads: %s", len(runs), ", ".join(f"{c.model} -> {c.out}" for c, *_ in runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
