"""Data-parallel per-sample gradients and DP-SGD over N processes, mirroring ``jax_impl.distributed`` name for name.

torch is multi-controller: N processes, one per device, joined in a ``torch.distributed`` process group (NCCL on
GPUs, gloo on CPUs), started by ``torchrun`` or by ``launch`` (torch.multiprocessing, spawn); ``init`` reads the
same environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) either way, so both run one code path. Every rank
sees the global batch, pads it to a multiple of N with masked examples and keeps its own contiguous block
(``shard_batch``: rank d gets block d, the same split as JAX's device d). The DP step on every rank:
  s_d, l_d = dp.clipped_grad_sum(params, x_d, y_d, mask=m_d)   its examples' clipped gradient SUM and loss SUM
  S, L, n  = all_reduce(SUM) of (s_d, l_d, sum m_d)             ONE collective on one flat buffer
  params  <- dp.noisy_update(params, S, noise=z, batch_size=n)
Noise: ``z`` is one draw, the same on every rank (compare.train's shared numpy draw, or a generator seeded the
same on every rank), added AFTER the all-reduce, so it enters the update once, as in the single-device step
(Opacus' DPDDP adds it on rank 0 before the all-reduce instead: the same sum). Every rank then computes the same
update from the same S and z, so the replicas stay identical without a broadcast.

Faults: the process group's ``timeout_s`` bounds every collective; a rank that dies makes the others' next
collective fail at once (gloo: connection closed), one that hangs makes it fail after ``timeout_s``; ``launch``
then reports every rank's outcome in one ``DistributedError`` and ends the stragglers.
Several machines: ``torchrun --nnodes M --nproc-per-node G --rdzv-endpoint HOST:PORT -m compare.train ...``;
the same ``init`` / ``make_step`` path runs in every process.
"""
from __future__ import annotations

import ctypes
import datetime
import logging
import os
import queue
import signal
import socket
import time
import traceback
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from contract import devices as contract_devices
from contract.privacy import check_dp_params
from contract.spec import DEFAULT_LOSS, check_loss
from torch_impl import dp
from torch_impl.per_sample import native_fn
from torch_impl.weights import to_canonical

log = logging.getLogger("torch_impl.distributed")


def device_count(device: str | None) -> int:
    """Replicas torch can run on ``device`` (None: its GPUs when present, else the CPU cap)."""
    if device in ("cuda", "gpu") or (device is None and torch.cuda.is_available()):
        return torch.cuda.device_count()
    return contract_devices.cpu_max()


def check_devices(devices: int, device: str | None) -> int:
    """``devices`` if torch can run that many replicas on ``device``, else a DevicesError naming why."""
    return contract_devices.check_devices(devices, "torch", device, device_count(device))

DEFAULT_TIMEOUT_S = 60.0
Params = dp.Params
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # x, y, mask: this rank's block


class DistributedError(RuntimeError):
    """A replica failed, died or timed out; the message lists every rank's outcome."""


def launched() -> bool:
    """True inside a process started by torchrun (or ``launch``): the environment names this rank."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init(*, backend: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> tuple[int, int]:
    """Join the process group described by the environment; ``(rank, world size)``. Idempotent.

    backend None: NCCL when CUDA is available (one GPU per local rank), else gloo.
    """
    if not dist.is_initialized():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", os.environ["RANK"])))
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return dist.get_rank(), dist.get_world_size()


def world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def pad_batch(x: torch.Tensor, y: torch.Tensor, devices: int) -> Batch:
    """Pad to a multiple of ``devices`` with zero examples; mask (B',) in x's dtype is 1 for real ones, 0 after."""
    batch, pad = x.shape[0], -x.shape[0] % devices
    mask = torch.cat([x.new_ones(batch), x.new_zeros(pad)])
    return torch.cat([x, x.new_zeros((pad, *x.shape[1:]))]), torch.cat([y, y.new_zeros(pad)]), mask


def shard_batch(x: torch.Tensor, y: torch.Tensor) -> Batch:
    """This rank's block of the padded global batch (``pad_batch``): B'/N examples, with their mask."""
    n, r = world(), rank()
    x, y, mask = pad_batch(x, y, n)
    size = x.shape[0] // n
    block = slice(r * size, (r + 1) * size)
    return x[block], y[block], mask[block]


def unreplicate(tree: object, device: str | None = None) -> object:
    """Every rank already holds a full copy: unchanged (mirrors ``jax_impl.distributed.unreplicate``)."""
    return tree


def per_sample_grads(params: Params, x: torch.Tensor, y: torch.Tensor, *, method: str = "vmap",
                     loss: str = DEFAULT_LOSS, mask: torch.Tensor | None = None) -> tuple[Params, torch.Tensor]:
    """This rank's examples' gradients ``{name: (B'/N, *shape)}`` and their mask; nothing is communicated.

    ``mask`` given: x, y, mask are already this rank's ``shard_batch`` block.
    """
    if mask is None:
        x, y, mask = shard_batch(x, y)
    return native_fn(method, loss=check_loss(loss))(params, x, y), mask


def gather_per_sample(grads: Params, mask: torch.Tensor) -> dict[str, np.ndarray]:
    """Every rank's gradients on every rank (``all_gather``), canonical ``{name: (B, *shape)}``, padding dropped."""
    def gathered(t: torch.Tensor) -> torch.Tensor:
        if world() == 1:
            return t
        parts = [torch.empty_like(t) for _ in range(world())]
        dist.all_gather(parts, t.contiguous())
        return torch.cat(parts)

    real = gathered(mask) > 0
    return to_canonical({k: gathered(g)[real] for k, g in grads.items()}, batch_axis=True)


def all_reduce_sums(sums: Params, *scalars: torch.Tensor) -> tuple[Params, list[torch.Tensor]]:
    """Sum ``sums`` and ``scalars`` over all ranks in one all-reduce of one flat buffer (one latency, not 10)."""
    names = list(sums)
    flat = torch.cat([sums[k].reshape(-1) for k in names] + [s.reshape(1).to(sums[names[0]].dtype) for s in scalars])
    if world() > 1:
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    out, start = {}, 0
    for k in names:
        out[k] = flat[start : start + sums[k].numel()].view_as(sums[k])
        start += sums[k].numel()
    return out, list(flat[start:])


StepFn = Callable[..., tuple[Params, torch.Tensor]]


def make_step(*, lr: float, clip: float, noise_multiplier: float, loss: str = DEFAULT_LOSS,
              clipping: str = "materialize", per_sample_method: str = "vmap") -> StepFn:
    """``step(params, x, y, noise=None, mask=None) -> (new params, mean loss before the step)``, data-parallel.

    Equal to ``dp.make_step``'s step on the whole batch (tests/test_distributed.py: float64 to 1e-12); x, y are
    the global batch (``mask`` given: already this rank's ``shard_batch`` block). Same result on every rank.
    """
    check_dp_params(lr=lr, clip=clip, noise_multiplier=noise_multiplier)
    check_loss(loss)
    dp.check_clipping(clipping)

    def step(params: Params, x: torch.Tensor, y: torch.Tensor, noise: Params | None = None,
             mask: torch.Tensor | None = None) -> tuple[Params, torch.Tensor]:
        if noise is None and noise_multiplier != 0:
            raise ValueError(f"noise_multiplier={noise_multiplier} needs a noise draw; got noise=None")
        if mask is None:
            x, y, mask = shard_batch(x, y)
        sums, loss_sum = dp.clipped_grad_sum(params, x, y, clip=clip, loss=loss, clipping=clipping,
                                             per_sample_method=per_sample_method, mask=mask)
        total, (loss_total, count) = all_reduce_sums(sums, loss_sum, mask.sum())
        batch = int(round(count.item()))  # the real examples over all ranks, as an int like dp.make_step's B
        new = dp.noisy_update(params, total, lr=lr, clip=clip, noise_multiplier=noise_multiplier,
                              batch_size=batch, noise=noise)
        return new, loss_total / batch

    return step


# ---------------------------------------------------------------- launching N processes on one machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """Linux: this spawned replica gets SIGKILL when the launching process dies (even by SIGKILL), so a killed
    ``compare.train`` leaves no replica training (and writing) on its own. Elsewhere a no-op."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


def _worker(rank_: int, devices: int, port: int, backend: str | None, timeout_s: float, threads: int | None,
            fn: Callable[..., Any], args: tuple, results: Any) -> None:
    _die_with_parent()
    os.environ.update(RANK=str(rank_), LOCAL_RANK=str(rank_), WORLD_SIZE=str(devices), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    if threads:
        torch.set_num_threads(threads)
    try:
        init(backend=backend, timeout_s=timeout_s)
        results.put((rank_, "ok", fn(*args)))
    except BaseException as err:  # reported to the parent, which raises for the whole group
        results.put((rank_, "error", f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=4)}"))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def launch(fn: Callable[..., Any], devices: int, *args: Any, backend: str | None = None,
           timeout_s: float = DEFAULT_TIMEOUT_S, device: str | None = None) -> list[Any]:
    """Run ``fn(*args)`` in ``devices`` processes joined in one group; every rank's return value, by rank.

    Under torchrun (``launched()``) the group exists already: ``fn`` runs in this process only and the list
    holds this rank's value. Otherwise ``devices`` processes are spawned (``fn``, ``args`` and results must
    pickle: return numpy or plain Python, not tensors). A rank that raises, dies or hangs ends the launch with
    a ``DistributedError`` within about ``timeout_s`` (the others fail in their next collective).
    On CPU each process gets cores / devices threads, so N processes do not oversubscribe the machine.
    """
    if launched():
        init(backend=backend, timeout_s=timeout_s)
        return [fn(*args)]
    check_devices(devices, device)
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    threads = None if torch.cuda.is_available() else max(1, (os.cpu_count() or 1) // devices)
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, devices, port, backend, timeout_s, threads, fn, args, results),
                         daemon=True) for r in range(devices)]
    for p in procs:
        p.start()
    outcome: dict[int, tuple[str, Any]] = {}
    deadline = None
    try:
        while len(outcome) < devices:
            try:
                r, status, value = results.get(timeout=0.2)
                outcome[r] = (status, value)
            except queue.Empty:
                for r, p in enumerate(procs):
                    if r not in outcome and not p.is_alive() and p.exitcode is not None:
                        time.sleep(0.2)  # its last message may still be in the pipe
                        if r not in outcome and results.empty():
                            outcome[r] = ("error", f"process died with exit code {p.exitcode}")
            if deadline is None and any(s != "ok" for s, _ in outcome.values()):
                deadline = time.monotonic() + timeout_s + 2.0  # the others' collectives time out by then
            if deadline is not None and time.monotonic() > deadline:
                for r in range(devices):
                    outcome.setdefault(r, ("error", f"no result {timeout_s + 2:g} s after another rank failed (ended)"))
    finally:
        for r, p in enumerate(procs):  # ranks that reported are exiting; one still running after a failure is hung: end it
            p.join(timeout=5.0 if r in outcome and outcome[r][0] == "ok" else 0.5)
            if p.is_alive():
                p.kill()
                p.join()
    failed = {r: v for r, (s, v) in sorted(outcome.items()) if s != "ok"}
    if failed:
        lines = "\n".join(f"  rank {r}: {str(v).strip().splitlines()[0]}" for r, v in failed.items())
        log.debug("failed ranks:\n%s", "\n\n".join(f"rank {r}:\n{v}" for r, v in failed.items()))
        raise DistributedError(f"{len(failed)} of {devices} replicas failed:\n{lines}")
    return [outcome[r][1] for r in range(devices)]


# ---------------------------------------------------------------- timing a data-parallel call (compare.run --devices)


def _join_lockstep(rank_: int, devices: int, port: int, timeout_s: float, threads: int | None) -> None:
    """Join ``lockstep``'s localhost group as ``rank_`` (the environment torchrun would set), with ``threads``."""
    os.environ.update(RANK=str(rank_), LOCAL_RANK=str(rank_), WORLD_SIZE=str(devices), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    if threads:
        torch.set_num_threads(threads)
    init(timeout_s=timeout_s)


def _follow(rank_: int, devices: int, port: int, timeout_s: float, threads: int | None, build: Callable[..., Any],
            build_args: tuple) -> None:
    """Ranks 1..N-1 of ``lockstep``: build the same call, then run it each time rank 0 broadcasts 1; 0 ends."""
    _die_with_parent()
    _join_lockstep(rank_, devices, port, timeout_s, threads)
    fn, args = build(*build_args)
    flag = torch.zeros(1, device="cuda" if dist.get_backend() == "nccl" else "cpu")
    try:
        while True:
            dist.broadcast(flag, 0)
            if flag.item() == 0:
                break
            fn(*args)
    finally:
        dist.destroy_process_group()


def lockstep(build: Callable[..., tuple[Callable[..., Any], tuple]], devices: int, *build_args: Any,
             timeout_s: float = DEFAULT_TIMEOUT_S) -> tuple[Callable[[], Any], Callable[[], None]]:
    """``(call, close)``: this process is rank 0 of ``devices``; ``call()`` runs ``fn(*args)`` once on every rank.

    ``build(*build_args) -> (fn, args)`` runs on every rank after the group exists (a module-level function).
    Each ``call`` first broadcasts one flag (a ~0.1 ms collective on localhost gloo, inside the timing), so the
    followers run exactly as many calls as rank 0; ``close`` stops them. For timing only: results stay on ranks.
    """
    check_devices(devices, None)
    ctx = mp.get_context("spawn")
    port = _free_port()
    threads = None if torch.cuda.is_available() else max(1, (os.cpu_count() or 1) // devices)
    procs = [ctx.Process(target=_follow, args=(r, devices, port, timeout_s, threads, build, build_args), daemon=True)
             for r in range(1, devices)]
    for p in procs:
        p.start()
    _join_lockstep(0, devices, port, timeout_s, threads)
    fn, args = build(*build_args)
    go = torch.ones(1, device="cuda" if dist.get_backend() == "nccl" else "cpu")

    def call() -> Any:
        dist.broadcast(go, 0)
        return fn(*args)

    def close() -> None:
        if dist.is_initialized():
            dist.broadcast(torch.zeros_like(go), 0)
            dist.destroy_process_group()
        for p in procs:
            p.join(timeout=10.0)
            if p.is_alive():
                p.kill()

    return call, close


def _bench_build(what: str, weights: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, *, dtype: str,
                 device: str | None, loss: str, clipping: str, per_sample_method: str,
                 hparams: dict[str, float]) -> tuple[Callable[..., Any], tuple]:
    from torch_impl.weights import to_native

    params = to_native(weights, dtype, device)
    xs, ys, mask = shard_batch(*dp.native_batch(x, y, dtype=dtype, device=device))  # placed before the clock
    if what == "per_sample":
        return per_sample_grads, (params, xs, ys, per_sample_method, loss, mask)
    step = make_step(**hparams, loss=loss, clipping=clipping, per_sample_method=per_sample_method)
    noise = dp.sample_noise(torch.Generator(device=xs.device).manual_seed(0), params)
    return step, (params, xs, ys, noise, mask)


def benchmark_call(what: str, devices: int, weights: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, *,
                   dtype: str, device: str | None, loss: str, clipping: str, per_sample_method: str,
                   hparams: dict[str, float]) -> tuple[Callable[..., Any], tuple]:
    """``(fn, args)`` timing ``what`` ("per_sample": this device's per-example gradients, not gathered; "dp_step")
    on ``devices`` replicas for the global batch x, y. Followers are stopped when this process exits."""
    import atexit

    kw = dict(dtype=dtype, device=device, loss=loss, clipping=clipping, per_sample_method=per_sample_method,
              hparams=hparams)
    if devices == 1:
        return _bench_call_build(what, weights, x, y, kw)
    call, close = lockstep(_bench_call_build, devices, what, weights, x, y, kw)
    atexit.register(close)
    return call, ()


def _bench_call_build(what: str, weights: dict, x: np.ndarray, y: np.ndarray, kw: dict) -> tuple[Callable, tuple]:
    fn, args = _bench_build(what, weights, x, y, **kw)
    if what == "per_sample":  # keyword arguments, so per_sample_grads' signature stays readable
        params, xs, ys, method, loss, mask = args
        return (lambda: per_sample_grads(params, xs, ys, method=method, loss=loss, mask=mask)), ()
    return fn, args
