"""The JAX peer: a DP-SGD step built on jax-privacy 2.x (``jax_privacy.clipped_grad``), as its users write it.

jax-privacy (Google DeepMind) is the maintained DP library for JAX. Its ``clipped_grad(loss, l2_clip_norm=C,
normalize_by=B, batch_argnums=(1, 2))`` vmaps ``value_and_grad`` over examples (each example passed as a batch
of one, ``keep_batch_dim=True``), so it always MATERIALISES the (B x |params|) per-example gradients, clips each
with ``clip_pytree`` and sums (optionally in micro-batches). That is the cost ``jax_impl.ghost`` avoids.

Clipping formula: ``clip_pytree`` scales by ``min(1, C / ||g||)``, with a NaN or +inf scale set to 0 and
NaN / inf gradient entries zeroed first (``nan_safe=True``). For finite gradients this equals ours,
``min(1, C / ||g||)`` with NaN -> 1: a zero gradient gets scale min(1, C/0 = inf) = 1 in both; our NaN case
(C = inf and ||g|| = inf) cannot arise from finite gradients. So the updates agree to rounding (float64 1e-10).

Noise: jax-privacy adds it with a *privatizer*, ``noise_addition.gaussian_privatizer(stddev=C * sigma,
prng_key=key)``, an optax transformation whose ``update`` splits its key and adds ``stddev *
optax.tree.random_like(sub_key, grads, jax.random.normal)`` to the clipped SUM. That draw cannot be handed a
given standard normal, so to take exactly ``dp.make_step``'s step for the same ``noise`` (what makes the peer
testable with noise on) we add ``C * sigma * noise`` ourselves: the privatizer's update with its draw
replaced by ours (tests/test_jax_privacy.py checks that its own draw has the same form). Then ``optax.sgd``.

Settings: the benchmark runs the peer at its fastest documented ``clipped_grad`` settings (its entry in
``contract.peers`` passes them and records them with every point; the factory's defaults are the same). Measured
with jax 0.12.0.1 / jax-privacy 2.0.0 on the 2-core Intel Xeon, B = 32, float32, median of 2 calls after
compiling (another job niced on the machine; ratios, not absolutes):
  default (nan_safe=True)                  2427 ms     nan_safe=False                          754-763 ms
  microbatch_size=8 / 1                    1063 / 1074 ms
  nan_safe=False + microbatch_size=4 / 16  1191 / 1806 ms   nan_safe=False + keep_batch_dim=False 1079 ms
``nan_safe=False`` skips zeroing NaN / inf gradient entries and scales; with finite gradients the result is the
same (our own step has no NaN guard either), so the comparison stays like for like.
"""
from __future__ import annotations

import importlib.util
import warnings
from functools import partial

import jax

from contract.spec import DEFAULT_LOSS, DEFAULT_MODEL, check_loss
from contract.privacy import check_dp_params
from jax_impl.dp import DPStepFn, Params, noisy_update
from jax_impl.model import Net, resolve
from jax_impl.per_sample import batch_loss

JAX_PRIVACY_AVAILABLE: bool = importlib.util.find_spec("jax_privacy") is not None


def make_jax_privacy_step(
    *, lr: float, clip: float, noise_multiplier: float, loss: str = DEFAULT_LOSS, nan_safe: bool = False,
    microbatch_size: int | None = None, keep_batch_dim: bool = True, model: str | Net = DEFAULT_MODEL,
) -> DPStepFn:
    """One jitted step ``step(params, x, y, noise=None) -> (new_params, mean loss before the step)``.

    = ``p - lr * (clipped_grad(..., normalize_by=B) + C * sigma * noise / B)``, i.e. ``dp.make_step``'s update.
    Raises ImportError (before any work) when jax-privacy is not installed (e.g. on a GPU image without it).
    """
    check_dp_params(lr=lr, clip=clip, noise_multiplier=noise_multiplier)
    check_loss(loss)
    resolve(model)
    if microbatch_size is not None and (not isinstance(microbatch_size, int) or microbatch_size < 1):
        raise ValueError(f"microbatch_size must be a positive integer or None, got {microbatch_size!r}")
    if not JAX_PRIVACY_AVAILABLE:
        raise ImportError("jax_privacy is not installed: pip install 'jax-privacy>=2.0'")
    import jax_privacy

    @jax.jit
    def step(params: Params, x: jax.Array, y: jax.Array, noise: Params | None = None) -> tuple[Params, jax.Array]:
        batch = x.shape[0]
        grad_fn = jax_privacy.clipped_grad(
            partial(batch_loss, loss=loss, model=model),  # each example arrives as a batch of one: its own loss
            l2_clip_norm=clip, normalize_by=batch, batch_argnums=(1, 2), return_values=True,
            nan_safe=nan_safe, microbatch_size=microbatch_size, keep_batch_dim=keep_batch_dim,
        )
        with warnings.catch_warnings():  # jax-privacy 2.0.0 calls optax.global_norm, deprecated in optax 0.2.8
            warnings.filterwarnings("ignore", "optax.global_norm is deprecated", DeprecationWarning)
            mean_clipped, aux = grad_fn(params, x, y)  # runs at trace time only (inside jit)
        # noisy_update divides by B; clipped_grad already did (normalize_by), so hand it the sum back.
        clipped_sum = jax.tree.map(lambda g: g * batch, mean_clipped)
        new = noisy_update(params, clipped_sum, lr=lr, clip=clip, noise_multiplier=noise_multiplier,
                           batch_size=batch, noise=noise)
        return new, aux.values.mean()

    return step
