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

Several machines: call ``jax.distributed.initialize()`` in each process first; ``jax.devices()`` is then global
and this same code runs unchanged in every process (each process must pass the same global batch here; a
loader feeding only local shards would use ``jax.make_array_from_process_local_data`` instead of ``shard_batch``).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from contract import devices as contract_devices
from contract.privacy import check_dp_params
from contract.spec import DEFAULT_LOSS, check_loss
from jax_impl import dp
from jax_impl.per_sample import native_fn
from jax_impl.weights import resolve_device, to_canonical

AXIS = "batch"
Params = dp.Params
Batch = tuple[jax.Array, jax.Array, jax.Array]  # x, y, mask: global arrays sharded on AXIS


def device_count(device: str | None) -> int:
    """Devices JAX can use for ``device`` (None: its GPUs when present, else the CPU cap)."""
    if device in ("cuda", "gpu") or (device is None and jax.default_backend() != "cpu"):
        return len(jax.devices())
    return min(len(jax.devices("cpu")), contract_devices.cpu_max())


def check_devices(devices: int, device: str | None) -> int:
    """``devices`` if JAX can run that many replicas on ``device``, else a DevicesError naming why."""
    return contract_devices.check_devices(devices, "jax", device, device_count(device))


def make_mesh(devices: int, device: str | None = None) -> Mesh:
    """A 1-D mesh over the first ``devices`` devices of ``device``'s backend (None: the default backend)."""
    check_devices(devices, device)
    pool = jax.devices() if device is None else jax.devices("gpu" if device in ("cuda", "gpu") else device)
    return Mesh(np.asarray(pool[:devices]), (AXIS,))


def world(mesh: Mesh) -> int:
    return mesh.size


def pad_batch(x: jax.Array | np.ndarray, y: jax.Array | np.ndarray, devices: int) -> Batch:
    """Pad to a multiple of ``devices`` with zero examples; mask (B',) in x's dtype is 1 for real ones, 0 after."""
    batch = x.shape[0]
    pad = -batch % devices
    mask = jnp.concatenate([jnp.ones(batch, x.dtype), jnp.zeros(pad, x.dtype)])
    x = jnp.concatenate([jnp.asarray(x), jnp.zeros((pad, *x.shape[1:]), x.dtype)])
    y = jnp.concatenate([jnp.asarray(y), jnp.zeros(pad, y.dtype)])
    return x, y, mask


def shard_batch(x: jax.Array | np.ndarray, y: jax.Array | np.ndarray, *, mesh: Mesh) -> Batch:
    """The global batch padded (``pad_batch``) and split over the mesh: block d of B'/N examples on device d."""
    sharding = NamedSharding(mesh, P(AXIS))
    return tuple(jax.device_put(a, sharding) for a in pad_batch(x, y, world(mesh)))  # type: ignore[return-value]


def replicate(tree: object, *, mesh: Mesh) -> object:
    """Params or noise with a full copy on every device of the mesh."""
    return jax.device_put(tree, NamedSharding(mesh, P()))


def unreplicate(tree: object, device: str | None = None) -> object:
    """Replicated params back on one device (for single-device evaluation)."""
    return jax.device_put(tree, resolve_device(device))


@lru_cache(maxsize=None)  # one trace per (mesh, method, loss): repeated calls do not re-trace
def _sharded_per_sample(mesh: Mesh, method: str, loss: str) -> Callable[[Params, jax.Array, jax.Array], Params]:
    grads = native_fn(method, loss=check_loss(loss))
    return jax.jit(jax.shard_map(grads, mesh=mesh, in_specs=(P(), P(AXIS), P(AXIS)), out_specs=P(AXIS),
                                 check_vma=False))


def per_sample_grads(params: Params, x: jax.Array, y: jax.Array, *, mesh: Mesh, method: str = "vmap",
                     loss: str = DEFAULT_LOSS, mask: jax.Array | None = None) -> tuple[Params, jax.Array]:
    """Per-example gradients computed where the examples live: leaves (B', *shape) sharded on AXIS, and the mask.

    Nothing is gathered (``gather_per_sample`` does that on request). ``mask`` given: x, y, mask are already
    ``shard_batch``'s output. ``method``: any traceable method of ``per_sample.METHODS`` (not 'loop').
    """
    if mask is None:
        x, y, mask = shard_batch(x, y, mesh=mesh)
    return _sharded_per_sample(mesh, method, loss)(replicate(params, mesh=mesh), x, y), mask


def gather_per_sample(grads: Params, mask: jax.Array) -> dict[str, np.ndarray]:
    """All examples' gradients on the host, canonical names/layouts ``{name: (B, *shape)}``, padding dropped."""
    real = np.asarray(mask) > 0
    return {k: v[real] for k, v in to_canonical(grads, batch_axis=True).items()}


StepFn = Callable[..., tuple[Params, jax.Array]]


def make_step(*, mesh: Mesh, lr: float, clip: float, noise_multiplier: float, loss: str = DEFAULT_LOSS,
              clipping: str = "materialize", per_sample_method: str = "vmap") -> StepFn:
    """``step(params, x, y, noise=None, mask=None) -> (new params, mean loss before the step)``, data-parallel.

    Equal to ``dp.make_step``'s step on the whole batch (tests/test_distributed.py: float64 to 1e-12); x, y are
    the global batch (``mask`` given: already ``shard_batch``'s output). The new params are replicated.
    """
    check_dp_params(lr=lr, clip=clip, noise_multiplier=noise_multiplier)
    check_loss(loss)
    dp.check_clipping(clipping)

    def local(params: Params, x: jax.Array, y: jax.Array, mask: jax.Array) -> tuple[Params, jax.Array, jax.Array]:
        sums, loss_sum = dp.clipped_grad_sum(params, x, y, clip=clip, loss=loss, clipping=clipping,
                                             per_sample_method=per_sample_method, mask=mask)
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
        return sharded_step(replicate(params, mesh=mesh), x, y, mask,
                            None if noise is None else replicate(noise, mesh=mesh))

    return step


def benchmark_call(what: str, devices: int, weights: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, *,
                   dtype: str, device: str | None, loss: str, clipping: str, per_sample_method: str,
                   hparams: dict[str, float]) -> tuple[Callable[..., object], tuple]:
    """``(fn, args)`` timing ``what`` ("per_sample": per-example gradients, not gathered; "dp_step") on a mesh of
    ``devices`` for the global batch x, y; inputs sharded / replicated before the clock (mirrors torch's)."""
    from jax_impl.weights import to_native

    mesh = make_mesh(devices, device)
    params = replicate(to_native(weights, dtype, device), mesh=mesh)
    xs, ys, mask = shard_batch(*dp.native_batch(x, y, dtype=dtype, device=device), mesh=mesh)
    if what == "per_sample":
        return (lambda p, xd, yd, m: per_sample_grads(p, xd, yd, mesh=mesh, method=per_sample_method, loss=loss,
                                                      mask=m)), (params, xs, ys, mask)
    step = make_step(mesh=mesh, **hparams, loss=loss, clipping=clipping, per_sample_method=per_sample_method)
    noise = replicate(dp.sample_noise(jax.random.key(0), params), mesh=mesh)
    return step, (params, xs, ys, noise, mask)
