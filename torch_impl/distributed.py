"""Data-parallel per-sample gradients and DP-SGD over N processes, mirroring ``jax_impl.distributed`` name for name.

Every rank (one process per replica: ``torch_impl.launch``) sees the global batch, pads it to a multiple of N with
masked examples and keeps its own contiguous block (``shard_batch``: rank d gets block d, the same split as JAX's
device d). The DP step on every rank, for any workload (``model=``) and clipping strategy:
  s_d, l_d = dp.clipped_grad_sum(params, x_d, y_d, mask=m_d)   its examples' clipped gradient SUM and loss SUM
  S, L, n  = all_reduce(SUM) of (s_d, l_d, sum m_d)             ONE collective on one flat buffer of P + 2 numbers
  params  <- dp.noisy_update(params, S, noise=z, batch_size=n)
ghost and bk compute each example's norm from that example alone, so they need nothing beyond the same P + 2
(``contract.communication``). Noise: ``z`` is one draw, the same on every rank (compare.train's shared numpy
draw from one seed), added AFTER the all-reduce, so it enters the update once, as in the single-device step
(Opacus' DPDDP adds it on rank 0 before the all-reduce instead: the same sum). Every rank then computes the same
update from the same S and z, so the replicas stay identical without a broadcast.

``data_parallel`` is the harness's one entry point: it joins (or spawns) the group, refuses ranks that disagree
on versions, world size, weights or configuration before the first step (``check_agreement``), and hands each
rank a ``Replica`` (its step, params and batch placement).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist

from contract.privacy import check_dp_params
from contract.spec import DEFAULT_LOSS, DEFAULT_MODEL, check_loss
from torch_impl import dp
from torch_impl.launch import (DEFAULT_TIMEOUT_S, DistributedError, check_devices, device_count, free_port, init,
                               launch, launched, lockstep, process_command, rank, world)
from torch_impl.model import Net
from torch_impl.per_sample import native_fn
from torch_impl.weights import to_canonical, to_native

__all__ = ["DEFAULT_TIMEOUT_S", "DistributedError", "Replica", "check_agreement", "check_devices", "data_parallel",
           "device_count", "free_port", "init", "launch", "launched", "lockstep", "make_step", "per_sample_grads",
           "process_command", "rank", "shard_batch", "world"]

Params = dp.Params
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # x, y, mask: this rank's block
StepFn = Callable[..., tuple[Params, torch.Tensor]]


def pad_batch(x: torch.Tensor, y: torch.Tensor, devices: int) -> Batch:
    """Pad to a multiple of ``devices`` with zero examples (token id 0 for token inputs); mask (B',) is 1 for
    real examples, 0 after, in x's dtype (the default float dtype for token ids)."""
    batch, pad = x.shape[0], -x.shape[0] % devices
    dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
    mask = torch.cat([torch.ones(batch, dtype=dtype, device=x.device), torch.zeros(pad, dtype=dtype, device=x.device)])
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
                     loss: str = DEFAULT_LOSS, mask: torch.Tensor | None = None,
                     model: str | Net = DEFAULT_MODEL) -> tuple[Params, torch.Tensor]:
    """This rank's examples' gradients ``{name: (B'/N, *shape)}`` and their mask; nothing is communicated.

    ``mask`` given: x, y, mask are already this rank's ``shard_batch`` block.
    """
    if mask is None:
        x, y, mask = shard_batch(x, y)
    return native_fn(method, loss=check_loss(loss), model=model)(params, x, y), mask


def gather_per_sample(grads: Params, mask: torch.Tensor,
                      model: str | Net = DEFAULT_MODEL) -> dict[str, np.ndarray]:
    """Every rank's gradients on every rank (``all_gather``), canonical ``{name: (B, *shape)}``, padding dropped."""
    def gathered(t: torch.Tensor) -> torch.Tensor:
        if world() == 1:
            return t
        parts = [torch.empty_like(t) for _ in range(world())]
        dist.all_gather(parts, t.contiguous())
        return torch.cat(parts)

    real = gathered(mask) > 0
    return to_canonical({k: gathered(g)[real] for k, g in grads.items()}, batch_axis=True, model=model)


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


def make_step(*, lr: float, clip: float, noise_multiplier: float, loss: str = DEFAULT_LOSS,
              clipping: str = "materialize", per_sample_method: str = "vmap",
              model: str | Net = DEFAULT_MODEL) -> StepFn:
    """``step(params, x, y, noise=None, mask=None) -> (new params, mean loss before the step)``, data-parallel.

    Equal to ``dp.make_step``'s step on the whole batch (tests/test_distributed*.py: float64 to 1e-12); x, y are
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
                                             per_sample_method=per_sample_method, mask=mask, model=model)
        total, (loss_total, count) = all_reduce_sums(sums, loss_sum, mask.sum())
        batch = int(round(count.item()))  # the real examples over all ranks, as an int like dp.make_step's B
        new = dp.noisy_update(params, total, lr=lr, clip=clip, noise_multiplier=noise_multiplier,
                              batch_size=batch, noise=noise)
        return new, loss_total / batch

    return step


# ---------------------------------------------------------------- the harness's entry point


@dataclass(frozen=True)
class Replica:
    """One replica's part of a data-parallel run: ``step(params, *place(x, y, noise))`` takes one DP step on the
    global batch x, y (numpy-converted native arrays) with the shared noise; ``writer`` is rank 0."""

    step: StepFn
    params: Params
    place: Callable[[Any, Any, Any], tuple]
    rank: int
    world: int
    writer: bool

    def local(self, params: Params) -> Params:
        """Params for single-device evaluation (each rank holds a full copy)."""
        return params


def digest(obj: Any) -> str:
    """A short sha256 of ``obj``: arrays by dtype, shape and bytes (name-sorted dicts), anything else by repr."""
    h = hashlib.sha256()
    if isinstance(obj, dict) and all(isinstance(v, np.ndarray) for v in obj.values()):
        for k in sorted(obj):
            h.update(f"{k}:{obj[k].dtype}:{obj[k].shape}".encode())
            h.update(np.ascontiguousarray(obj[k]).tobytes())
    else:
        h.update(repr(obj).encode())
    return h.hexdigest()[:16]


def check_agreement(fields: dict[str, str]) -> None:
    """Refuse, on every rank, a group whose ranks disagree on any of ``fields`` ({name: digest}, e.g. versions,
    world, weights, config): one ``DistributedError`` naming the field and the ranks, before any step."""
    if world() == 1:
        return
    every: list[Any] = [None] * world()
    dist.all_gather_object(every, fields)
    bad = [f"{name}: " + ", ".join(f"process {r} has {f.get(name)}" for r, f in enumerate(every))
           for name in fields if len({f.get(name) for f in every}) > 1]
    if bad:
        raise DistributedError("processes disagree before the first step; " + "; ".join(bad))


def _replica(weights: dict[str, np.ndarray], dtype: str, device: str | None, model: str | Net,
             hparams: dict[str, Any]) -> Replica:
    step = make_step(**hparams, model=model)

    def place(x: torch.Tensor, y: torch.Tensor, noise: Params | None) -> tuple:
        xs, ys, mask = shard_batch(x, y)  # this rank's block of the global batch
        return xs, ys, noise, mask

    return Replica(step, to_native(weights, dtype, device, model=model), place, rank(), world(), rank() == 0)


def _run_replica(run: Callable[..., Any], weights: dict[str, np.ndarray], args: tuple, dtype: str,
                 device: str | None, model: str | Net, hparams: dict[str, Any], agree: dict[str, str]) -> Any:
    check_agreement({**agree, "world": digest(world())})
    return run(_replica(weights, dtype, device, model, hparams), *args)


def data_parallel(run: Callable[..., Any], devices: int, weights: dict[str, np.ndarray], *args: Any, dtype: str,
                  device: str | None, model: str | Net, hparams: dict[str, Any], agree: dict[str, str] | None = None,
                  timeout_s: float = DEFAULT_TIMEOUT_S) -> Any:
    """``run(replica, *args)`` on each of ``devices`` replicas; this process's value (started by torchrun or the
    harness's process launcher: the group exists) or rank 0's (``devices`` processes spawned here).

    ``hparams``: ``make_step``'s (lr, clip, noise_multiplier, loss, clipping). ``agree``: {name: digest} every rank
    must share (``check_agreement``; the world size is added). Spawned: ``run`` and ``args`` must pickle.
    """
    agree = dict(agree or {})
    if launched():
        init(timeout_s=timeout_s)
        return _run_replica(run, weights, args, dtype, device, model, hparams, agree)
    if devices == 1:
        return _run_replica(run, weights, args, dtype, device, model, hparams, agree)
    return launch(_run_replica, devices, run, weights, args, dtype, device, model, hparams, agree,
                  timeout_s=timeout_s, device=device)[0]


# ---------------------------------------------------------------- timing a data-parallel call (compare.run --devices)


def _bench_build(what: str, weights: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, *, dtype: str,
                 device: str | None, loss: str, clipping: str, per_sample_method: str, hparams: dict[str, float],
                 model: str) -> tuple[Callable[..., Any], tuple]:
    params = to_native(weights, dtype, device, model=model)
    xs, ys, mask = shard_batch(*dp.native_batch(x, y, dtype=dtype, device=device))  # placed before the clock
    if what == "per_sample":
        return (lambda: per_sample_grads(params, xs, ys, method=per_sample_method, loss=loss, mask=mask,
                                         model=model)), ()
    step = make_step(**hparams, loss=loss, clipping=clipping, per_sample_method=per_sample_method, model=model)
    noise = dp.sample_noise(torch.Generator(device=xs.device).manual_seed(0), params)
    return step, (params, xs, ys, noise, mask)


def benchmark_call(what: str, devices: int, weights: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, *,
                   dtype: str, device: str | None, loss: str, clipping: str, per_sample_method: str,
                   hparams: dict[str, float], model: str = DEFAULT_MODEL) -> tuple[Callable[..., Any], tuple]:
    """``(fn, args)`` timing ``what`` ("per_sample": this device's per-example gradients, not gathered; "dp_step")
    on ``devices`` replicas for the global batch x, y of ``model``. Followers are stopped when this process exits."""
    import atexit

    kw = dict(dtype=dtype, device=device, loss=loss, clipping=clipping, per_sample_method=per_sample_method,
              hparams=hparams, model=model)
    if devices == 1:
        return _bench_build(what, weights, x, y, **kw)
    call, close = lockstep(_bench_call_build, devices, what, weights, x, y, kw)
    atexit.register(close)
    return call, ()


def _bench_call_build(what: str, weights: dict, x: np.ndarray, y: np.ndarray, kw: dict) -> tuple[Callable, tuple]:
    return _bench_build(what, weights, x, y, **kw)
