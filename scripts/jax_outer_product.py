"""Why JAX's ``per_layer`` stays above its floor on XLA:CPU: the fc1 outer products write at a third of fill speed.

``per_layer``'s fc1 rule writes B x 9216 x 128 float32 (1.2 GB at B=256, 98% of the per-sample output) as
``einsum("bi,bo->bio")``. XLA:CPU compiles it to one loop fusion ``multiply(broadcast(a), broadcast(g))``; this
script times that fusion beside what the floor assumes (writing the same bytes) and the rewrites one would try,
each jitted, median of 7 calls after one warm-up, in one process with the benchmark's malloc setting:

  python scripts/jax_outer_product.py [--batch-size 256] [--threads-note]

Printed: ms and effective GB/s of each variant; the committed printouts are in paper/versions/profiles/ and the
results document (docs/results/seed_cnn.md, "Where the time goes") prints them as a table.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("MALLOC_MMAP_MAX_", "0")  # (only effective when set before the process starts; the
os.environ.setdefault("MALLOC_TRIM_THRESHOLD_", str(1 << 40))  # sweep sets them in the environment)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

IN, OUT = 9216, 128  # fc1 of the seed CNN


def variants(b: int) -> dict:
    def chunked(a: jax.Array, g: jax.Array, n: int = 8) -> jax.Array:
        step = IN // n
        return jnp.concatenate([jnp.einsum("bi,bo->bio", a[:, k * step:(k + 1) * step], g) for k in range(n)], 1)

    def two_passes(a: jax.Array, g: jax.Array) -> jax.Array:  # a broadcast copy, then an in-place scale
        gb = jax.lax.optimization_barrier(jnp.broadcast_to(g[:, None, :], (b, IN, OUT)) + 0.0)
        return gb * a[:, :, None]

    return {
        "fill (what the floor assumes)": lambda a, g: jnp.zeros((b, IN, OUT), a.dtype) + g[0, 0],
        "broadcast copy of a": lambda a, g: jnp.broadcast_to(a[:, :, None], (b, IN, OUT)) + 0.0,
        "per_layer: einsum bi,bo->bio": lambda a, g: jnp.einsum("bi,bo->bio", a, g),
        "einsum bi,bo->boi (torch layout)": lambda a, g: jnp.einsum("bi,bo->boi", a, g),
        "dot_general, contraction of size 1": lambda a, g: jax.lax.dot_general(
            a[:, :, None], g[:, None, :], (((2,), (1,)), ((0,), (0,)))),
        "8 chunks of the input axis": chunked,
        "broadcast copy + barrier + scale": two_passes,
        "lax.map of jnp.outer over samples": lambda a, g: jax.lax.map(lambda ag: jnp.outer(*ag), (a, g)),
    }


def time_ms(fn, *args, repeats: int = 7) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=256)
    b = p.parse_args().batch_size
    a = jax.random.normal(jax.random.key(0), (b, IN))
    g = jax.random.normal(jax.random.key(1), (b, OUT))
    nbytes = b * IN * OUT * 4
    print(f"jax {jax.__version__}, B={b}, output {nbytes / 1e9:.2f} GB float32")
    for name, fn in variants(b).items():
        ms = time_ms(jax.jit(fn), a, g)
        print(f"{name:40s} {ms:8.1f} ms  {nbytes / ms / 1e6:5.1f} GB/s")


if __name__ == "__main__":
    main()
