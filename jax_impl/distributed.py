"""Data-parallel per-sample gradients and DP-SGD over N devices, mirroring ``torch_impl.distributed`` name for name.

JAX is single-controller: one Python process drives a ``Mesh`` of N devices with one axis, ``AXIS``. The global
batch is padded to a multiple of N with masked examples (``shard_batch``) and placed with
``NamedSharding(mesh, P(AXIS))``: device d holds the d-th contiguous block, the same split as torch's rank d.
One jitted ``shard_map`` then runs on every device (``check_vma=False``: with JAX's replication checking on,
``jax.grad`` w.r.t. anything replicated inside the map -- the params, or the zero probes that ``per_layer`` and
``ghost`` differentiate -- is transposed into a hidden ``psum``, so each device would get gradients summed over
ALL devices' examples; measured: per-example gradients off by O(1). Off, every gradient is the device's own and
the one ``psum`` below is the only communication):
  s_d, l_d = dp.clipped_grad_sum(params, x_d, y_d, mask=m_d)   its examples' clipped gradient SUM and loss SUM
  S, L, n  = psum over AXIS of (s_d, l_d, sum m_d)              the only communication: XLA's all-reduce
and, still inside the jit, on the replicated result
  params  <- dp.noisy_update(params, S, noise=z, batch_size=n)  with ONE noise draw z, replicated
Noise: ``z`` is one draw (compare.train's shared numpy draw, or ``dp.sample_noise`` with one key) given to every
device and added AFTER the psum, so it enters the update once, exactly as in the single-device step; adding it
before the psum would add N draws (noise std x sqrt(N)). Every device computes the same update from the same
S and z, so the replicas stay identical with no broadcast.

Every strategy (materialize, ghost, bk) and every workload (``model=``) runs this way: ghost and bk compute each
example's norm from that example alone, so the psum carries the same P + 2 numbers (``contract.communication``).
Several processes (``jax_impl.launch``): after ``jax.distributed.initialize`` the mesh spans every process's
devices; ``shard_batch`` and ``replicate`` build global arrays from each process's copy of the global batch (only
its own blocks are placed), and ``data_parallel`` is the harness's one entry point, as on torch's side.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from contract.privacy import check_dp_params
from contract.spec import DEFAULT_LOSS, DEFAULT_MODEL, check_loss
from jax_impl import dp
from jax_impl.launch import (DEFAULT_TIMEOUT_S, DistributedError, check_devices, device_count, free_port, init,
                             launched, process_command, rank, world)
from jax_impl.model import Net
from jax_impl.per_sample import native_fn
from jax_impl.weights import resolve_device, to_canonical, to_native

__all__ = ["DEFAULT_TIMEOUT_S", "DistributedError", "Replica", "check_agreement", "check_devices", "data_parallel",
           "device_count", "free_port", "init", "launched", "make_mesh", "make_step", "per_sample_grads",
           "process_command", "rank", "shard_batch", "world"]

AXIS = "batch"
Params = dp.Params
Batch = tuple[jax.Array, jax.Array, jax.Array]  # x, y, mask: global arrays sharded on AXIS
StepFn = Callable[..., tuple[Params, jax.Array]]


def make_mesh(devices: int, device: str | None = None) -> Mesh:
    """A 1-D mesh over ``devices`` devices of ``device``'s backend (None: the default backend): this process's
    first ``devices``, or, after ``init`` joined several processes, that many from every process."""
    check_devices(devices, device)
    backend = None if device is None else ("gpu" if device in ("cuda", "gpu") else device)
    pool = [d for p in range(jax.process_count())
            for d in [d for d in jax.devices(backend) if d.process_index == p][:devices]]
    return Mesh(np.asarray(pool), (AXIS,))


def _global(a: jax.Array | np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A global array from this process's full copy of ``a``: only the blocks of its own devices are placed."""
    host = np.asarray(a)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def pad_batch(x: jax.Array | np.ndarray, y: jax.Array | np.ndarray, devices: int) -> Batch:
    """Pad to a multiple of ``devices`` with zero examples (token id 0 for token inputs); mask (B',) is 1 for real
    examples, 0 after, in x's dtype (float32 for token ids)."""
    batch = x.shape[0]
    pad = -batch % devices
    dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32
    mask = jnp.concatenate([jnp.ones(batch, dtype), jnp.zeros(pad, dtype)])
    x = jnp.concatenate([jnp.asarray(x), jnp.zeros((pad, *x.shape[1:]), x.dtype)])
    y = jnp.concatenate([jnp.asarray(y), jnp.zeros(pad, y.dtype)])
    return x, y, mask


def shard_batch(x: jax.Array | np.ndarray, y: jax.Array | np.ndarray, *, mesh: Mesh) -> Batch:
    """The global batch padded (``pad_batch``) and split over the mesh: block d of B'/N examples on device d."""
    sharding = NamedSharding(mesh, P(AXIS))
    return tuple(_global(a, sharding) for a in pad_batch(x, y, mesh.size))  # type: ignore[return-value]


def replicate(tree: object, *, mesh: Mesh) -> object:
    """Params or noise with a full copy on every device of the mesh (each process gives the same values)."""
    sharding = NamedSharding(mesh, P())
    return jax.tree.map(lambda a: a if isinstance(a, jax.Array) and a.sharding.is_equivalent_to(sharding, a.ndim)
                        or isinstance(a, jax.Array) and not a.is_fully_addressable  # a step's output: in place
                        else _global(a, sharding), tree)


def unreplicate(tree: object, device: str | None = None) -> object:
    """Replicated params back on one device of this process (for single-device evaluation)."""
    dev = resolve_device(device)
    return jax.tree.map(lambda a: jax.device_put(a.addressable_data(0), dev), tree)


@lru_cache(maxsize=None)  # one trace per (mesh, method, loss, model): repeated calls do not re-trace
def _sharded_per_sample(mesh: Mesh, method: str, loss: str,
                        model: str | Net) -> Callable[[Params, jax.Array, jax.Array], Params]:
    grads = native_fn(method, loss=check_loss(loss), model=model)
    return jax.jit(jax.shard_map(grads, mesh=mesh, in_specs=(P(), P(AXIS), P(AXIS)), out_specs=P(AXIS),
                                 check_vma=False))


def per_sample_grads(params: Params, x: jax.Array, y: jax.Array, *, mesh: Mesh, method: str = "vmap",
                     loss: str = DEFAULT_LOSS, mask: jax.Array | None = None,
                     model: str | Net = DEFAULT_MODEL) -> tuple[Params, jax.Array]:
    """Per-example gradients computed where the examples live: leaves (B', *shape) sharded on AXIS, and the mask.

    Nothing is gathered (``gather_per_sample`` does that on request). ``mask`` given: x, y, mask are already
    ``shard_batch``'s output. ``method``: any traceable method of ``per_sample.METHODS`` (not 'loop').
    """
    if mask is None:
        x, y, mask = shard_batch(x, y, mesh=mesh)
    return _sharded_per_sample(mesh, method, loss, model)(replicate(params, mesh=mesh), x, y), mask


def gather_per_sample(grads: Params, mask: jax.Array, model: str | Net = DEFAULT_MODEL) -> dict[str, np.ndarray]:
    """All examples' gradients on the host, canonical names/layouts ``{name: (B, *shape)}``, padding dropped."""
    if jax.process_count() > 1:  # blocks of other processes' devices: gathered to every process
        from jax.experimental import multihost_utils

        grads, mask = multihost_utils.process_allgather((grads, mask), tiled=True)
    real = np.asarray(mask) > 0
    return {k: v[real] for k, v in to_canonical(grads, batch_axis=True, model=model).items()}


StepFn = Callable[..., tuple[Params, jax.Array]]


def make_step(*, mesh: Mesh, lr: float, clip: float, noise_multiplier: float, loss: str = DEFAULT_LOSS,
              clipping: str = "materialize", per_sample_method: str = "vmap",
              model: str | Net = DEFAULT_MODEL) -> StepFn:
    """``step(params, x, y, noise=None, mask=None) -> (new params, mean loss before the step)``, data-parallel.

    Equal to ``dp.make_step``'s step on the whole batch (tests/test_distributed.py: float64 to 1e-12); x, y are
    the global batch (``mask`` given: already ``shard_batch``'s output). The new params are replicated.
    """
    check_dp_params(lr=lr, clip=clip, noise_multiplier=noise_multiplier)
    check_loss(loss)
    dp.check_clipping(clipping)

    def local(params: Params, x: jax.Array, y: jax.Array, mask: jax.Array) -> tuple[Params, jax.Array, jax.Array]:
        sums, loss_sum = dp.clipped_grad_sum(params, x, y, clip=clip, loss=loss, clipping=clipping,
                                             per_sample_method=per_sample_method, mask=mask, model=model)
        return jax.lax.psum((sums, loss_sum, jnp.sum(mask)), AXIS)

    reduce = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(AXIS), P(AXIS), P(AXIS)), out_specs=P(),
                           check_vma=False)

    @jax.jit
    def sharded_step(params: Params, x: jax.Array, y: jax.Array, mask: jax.Array,
                     noise: Params | None) -> tuple[Params, jax.Array]:
        sums, loss_sum, count = reduce(params, x, y, mask)
        new = dp.noisy_update(params, sums, lr=lr, clip=clip, noise_multiplier=noise_multiplier, batch_size=count,
                              noise=noise)
        return new, loss_sum / count

    def step(params: Params, x: jax.Array, y: jax.Array, noise: Params | None = None,
             mask: jax.Array | None = None) -> tuple[Params, jax.Array]:
        if noise is None and noise_multiplier != 0:
            raise ValueError(f"noise_multiplier={noise_multiplier} needs a noise draw; got noise=None")
        if mask is None:
            x, y, mask = shard_batch(x, y, mesh=mesh)
        new, loss = sharded_step(replicate(params, mesh=mesh), x, y, mask,
                                 None if noise is None else replicate(noise, mesh=mesh))
        # the mean loss is replicated: this process's copy is the value (a global array spanning other processes'
        # devices cannot be read here)
        return new, loss if loss.is_fully_addressable else loss.addressable_data(0)

    return step


# ---------------------------------------------------------------- the harness's entry point


@dataclass(frozen=True)
class Replica:
    """This process's part of a data-parallel run: ``step(params, *place(x, y, noise))`` takes one DP step on the
    global batch x, y (native arrays) with the shared noise; ``writer`` is process 0 (mirrors torch's)."""

    step: StepFn
    params: Params
    place: Callable[[Any, Any, Any], tuple]
    rank: int
    world: int
    writer: bool
    device: str | None = None

    def local(self, params: Params) -> Params:
        """Params on one device of this process, for single-device evaluation."""
        return unreplicate(params, self.device)


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
    """Refuse, in every process, a run whose processes disagree on any of ``fields`` ({name: 16-hex digest}, e.g.
    versions, world, weights, config): one ``DistributedError`` naming the field and the processes, before any
    step (mirrors torch's; the digests travel as bytes through ``process_allgather``)."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    names = sorted(fields)
    mine = np.frombuffer("".join(fields[k] for k in names).encode(), np.uint8).reshape(len(names), -1)
    every = np.asarray(multihost_utils.process_allgather(mine))  # (processes, fields, 16)
    bad = [f"{name}: " + ", ".join(f"process {r} has {every[r, i].tobytes().decode()}" for r in range(len(every)))
           for i, name in enumerate(names) if len({every[r, i].tobytes() for r in range(len(every))}) > 1]
    if bad:
        raise DistributedError("processes disagree before the first step; " + "; ".join(bad))


def data_parallel(run: Callable[..., Any], devices: int, weights: dict[str, np.ndarray], *args: Any, dtype: str,
                  device: str | None, model: str | Net, hparams: dict[str, Any], agree: dict[str, str] | None = None,
                  timeout_s: float = DEFAULT_TIMEOUT_S) -> Any:
    """``run(replica, *args)`` on a mesh of ``devices`` devices of this process (of every process, when started as
    one of several: ``launch.launched``); this process's value. Mirrors torch's: same arguments and meaning.

    ``hparams``: ``make_step``'s (lr, clip, noise_multiplier, loss, clipping). ``agree``: {name: digest} every
    process must share (``check_agreement``; the world size is added).
    """
    if launched():
        init(timeout_s=timeout_s)
    mesh = make_mesh(devices, device)
    check_agreement({**dict(agree or {}), "world": digest((mesh.size, jax.process_count()))})
    step = make_step(mesh=mesh, **hparams, model=model)

    def place(x: jax.Array, y: jax.Array, noise: Params | None) -> tuple:
        xs, ys, mask = shard_batch(x, y, mesh=mesh)
        return xs, ys, None if noise is None else replicate(noise, mesh=mesh), mask

    params = replicate(to_native(weights, dtype, device, model=model), mesh=mesh)
    replica = Replica(step, params, place, rank(), mesh.size, rank() == 0, device)
    return run(replica, *args)


def benchmark_call(what: str, devices: int, weights: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, *,
                   dtype: str, device: str | None, loss: str, clipping: str, per_sample_method: str,
                   hparams: dict[str, float], model: str = DEFAULT_MODEL) -> tuple[Callable[..., object], tuple]:
    """``(fn, args)`` timing ``what`` ("per_sample": per-example gradients, not gathered; "dp_step") on a mesh of
    ``devices`` for the global batch x, y of ``model``; inputs sharded / replicated before the clock (mirrors
    torch's)."""
    mesh = make_mesh(devices, device)
    params = replicate(to_native(weights, dtype, device, model=model), mesh=mesh)
    xs, ys, mask = shard_batch(*dp.native_batch(x, y, dtype=dtype, device=device), mesh=mesh)
    if what == "per_sample":
        return (lambda p, xd, yd, m: per_sample_grads(p, xd, yd, mesh=mesh, method=per_sample_method, loss=loss,
                                                      mask=m, model=model)), (params, xs, ys, mask)
    step = make_step(mesh=mesh, **hparams, loss=loss, clipping=clipping, per_sample_method=per_sample_method,
                     model=model)
    noise = replicate(dp.sample_noise(jax.random.key(0), params), mesh=mesh)
    return step, (params, xs, ys, noise, mask)
