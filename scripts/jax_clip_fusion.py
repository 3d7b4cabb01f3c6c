"""Why jax-privacy's DP step is slow on XLA:CPU: clipping INSIDE the vmapped per-example gradient.

Same math four ways, one process, float32, best of 3 (``python scripts/jax_clip_fusion.py 32``):
  1. jit(vmap(value_and_grad)) then optax.per_example_global_norm_clip (clip after the vmap: our ``materialize``)
  2. the same, but each example's gradient tree scaled by its clip factor inside the vmapped function, then summed
  3. jax_privacy.clipped_grad(l2_clip_norm=1)   (clips inside its vmap, with nan-safe ``where``s)
  4. jax_privacy.clipped_grad(l2_clip_norm=inf)
Measured on the 2-core Intel Xeon at B=32 (jax 0.10.2, MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2^40):
308 / 16096 / 1021 / 989 ms. The vmapped conv weight
gradient is a grouped convolution (feature_group_count=B, jax#13800); an elementwise scale fused onto it makes it
~50x slower on XLA:CPU, and jax-privacy's nan-safe ops only partly break that fusion.
"""
import math
import sys
import time
import warnings
from functools import partial

import jax
import jax.numpy as jnp
import optax

from compare.frameworks import side
from compare.spec import make_batch
from compare.weights import init_weights

batch_loss, native_inputs = side("jax").batch_loss, side("jax").native_inputs


def best_ms(f, *args, n: int = 3) -> float:
    jax.block_until_ready(f(*args))
    times = []
    for _ in range(n):
        t = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - t)
    return 1e3 * min(times)


def main(batch: int) -> None:
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    import jax_privacy

    x, y = make_batch(batch, 0)
    params, xn, yn = native_inputs(init_weights(0), x, y, dtype="float32", device="cpu")
    loss = partial(batch_loss, loss="nll_log_softmax")
    one = lambda p, xi, yi: loss(p, xi[None], yi[None])  # noqa: E731 -- one example as a batch of one

    @jax.jit
    def clip_after(p, xb, yb):
        _, g = jax.vmap(jax.value_and_grad(one), in_axes=(None, 0, 0))(p, xb, yb)
        leaves, _ = jax.tree.flatten(g)
        return optax.per_example_global_norm_clip(leaves, 1.0)[0]

    @jax.jit
    def clip_inside(p, xb, yb):
        def clipped(xi, yi):
            g = jax.grad(one)(p, xi, yi)
            scale = jnp.minimum(1.0, 1.0 / optax.tree.norm(g))
            return jax.tree.map(lambda t: t * scale, g)
        return jax.tree.map(lambda t: t.sum(0), jax.vmap(clipped)(xb, yb))

    runs = {"clip after vmap (ours)": clip_after, "clip inside vmap": clip_inside}
    for clip in (1.0, math.inf):
        runs[f"jax_privacy.clipped_grad clip={clip}"] = jax.jit(jax_privacy.clipped_grad(
            loss, l2_clip_norm=clip, normalize_by=batch, batch_argnums=(1, 2)))
    for name, fn in runs.items():
        print(f"{name:40s} {best_ms(fn, params, xn, yn):9.1f} ms", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 32)
