"""TF32 on a CUDA GPU: the seed CNN's batched gradient with TF32 allowed against full float32, both frameworks.

The project computes float32 at full precision everywhere (torch: TF32 off, ``torch_impl.weights``; JAX:
``Precision.HIGHEST``). This check measures what TF32 would change: median time of the batched gradient and its
error against float64 (max |g - g64| / max |g64| per parameter, the worst), torch with
``torch.backends.cuda.matmul.allow_tf32`` / ``cudnn.allow_tf32`` on and off, JAX with
``jax.default_matmul_precision("tensorfloat32")`` on a model whose dots take the default precision.
TF32 is a tensor-core mode of NVIDIA GPUs (Ampere and later): without a CUDA device the check prints why it
is skipped and exits 0 (the GPU check's dry run on CPU).  Usage: python scripts/tf32_check.py [--batch-size B]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np


def _time(fn, repeats: int = 10) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _err(got: dict, ref: dict) -> float:
    return max(float(np.abs(np.asarray(got[k], np.float64) - ref[k]).max() / np.abs(ref[k]).max()) for k in ref)


def torch_rows(weights: dict, x: np.ndarray, y: np.ndarray) -> list[dict]:
    import torch

    from compare.frameworks import side
    s = side("torch")
    ref = s.to_canonical(s.reference_fn()(*s.native_inputs(weights, x.astype(np.float64), y, dtype="float64",
                                                             device="cuda")))
    rows = []
    for tf32 in (False, True):
        args = s.native_inputs(weights, x, y, device="cuda")
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
        fn = s.reference_fn()
        ms = _time(lambda: (fn(*args), torch.cuda.synchronize()))
        rows.append({"framework": "torch", "tf32": tf32, "median_ms": ms, "error": _err(s.to_canonical(fn(*args)), ref)})
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    return rows


def jax_rows(weights: dict, x: np.ndarray, y: np.ndarray) -> list[dict]:
    import jax

    from compare.frameworks import side
    s = side("jax")
    ref = s.to_canonical(s.reference_fn()(*s.native_inputs(weights, x.astype(np.float64), y, dtype="float64")))
    rows = []
    for precision in ("highest", "tensorfloat32"):
        with jax.default_matmul_precision(precision):
            args = s.native_inputs(weights, x, y)
            fn = jax.jit(lambda p, xx, yy: s.reference_fn()(p, xx, yy))
            ms = _time(lambda: jax.block_until_ready(fn(*args)))
            rows.append({"framework": "jax", "tf32": precision == "tensorfloat32", "median_ms": ms,
                         "error": _err(s.to_canonical(fn(*args)), ref),
                         "note": "the models pin Precision.HIGHEST per dot: a context cannot lower it"})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=256)
    a = p.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("tf32: skipped: TF32 is a tensor-core mode of CUDA GPUs and this machine has none")
        return 0
    from compare.spec import make_batch
    from compare.weights import init_weights
    weights, (x, y) = init_weights(0), make_batch(a.batch_size, 0)
    rows = torch_rows(weights, x, y) + jax_rows(weights, x, y)
    print(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
