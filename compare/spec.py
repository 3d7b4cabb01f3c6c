"""The contract both implementations share: parameter names/shapes, losses, input checks.

Canonical layout = PyTorch ``state_dict`` names and layouts (conv OIHW, linear (out, in)).
Pure numpy so that either side (and the harness) can import it without the other framework.
"""
from __future__ import annotations

import numpy as np

INPUT_SHAPE: tuple[int, int, int] = (1, 28, 28)  # C, H, W of one example (NCHW batches)
NUM_CLASSES = 10

PARAM_SHAPES: dict[str, tuple[int, ...]] = {
    "conv1.weight": (32, 1, 3, 3),
    "conv1.bias": (32,),
    "conv2.weight": (64, 32, 3, 3),
    "conv2.bias": (64,),
    "fc1.weight": (128, 9216),
    "fc1.bias": (128,),
    "fc2.weight": (10, 128),
    "fc2.bias": (10,),
}
PARAM_NAMES: tuple[str, ...] = tuple(PARAM_SHAPES)
NUM_PARAMS = sum(int(np.prod(s)) for s in PARAM_SHAPES.values())  # 1,199,882

# "nll_log_softmax": nll of log_softmax (= cross-entropy), what the tutorial meant.
# "seed": nll_loss on raw logits (-logit[y]); the seed discards log_softmax (`output = x`).
LOSSES: tuple[str, ...] = ("nll_log_softmax", "seed")
DEFAULT_LOSS = "nll_log_softmax"
DTYPES: tuple[str, ...] = ("float32", "float64")


class InputError(ValueError):
    """A batch, label, dtype or option that the per-sample functions cannot accept."""


class DeviceError(InputError):
    """A device asked for that this machine or framework build cannot provide (``device="cuda"`` without a GPU)."""


def check_loss(loss: str) -> str:
    if loss not in LOSSES:
        raise InputError(f"unknown loss {loss!r}; expected one of {LOSSES}")
    return loss


def check_dtype(dtype: str) -> str:
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; expected one of {DTYPES}")
    return dtype


def check_chunk_size(chunk_size: int | None) -> int | None:
    integer = isinstance(chunk_size, (int, np.integer)) and not isinstance(chunk_size, (bool, np.bool_))
    if chunk_size is not None and (not integer or chunk_size < 1):
        raise InputError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
    return chunk_size


def label_range_error(y: np.ndarray) -> str | None:
    """``"0..9 at indices [...] (values [...])"`` for labels outside the classes, else None."""
    bad = np.flatnonzero((y < 0) | (y >= NUM_CLASSES))
    if not bad.size:
        return None
    return f"0..{NUM_CLASSES - 1} at indices {bad[:10].tolist()} (values {y[bad[:10]].tolist()})"


def check_batch(x: np.ndarray, y: np.ndarray) -> None:
    """Reject what would otherwise fail late or silently (JAX clamps out-of-range label indices)."""
    if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
        raise InputError(f"x and y must be numpy arrays, got {type(x).__name__} and {type(y).__name__}")
    if x.ndim != 4 or x.shape[1:] != INPUT_SHAPE:
        raise InputError(f"x must have shape (B, 1, 28, 28) (NCHW), got {x.shape}")
    if x.shape[0] < 1:
        raise InputError("x is an empty batch (B=0)")
    if x.dtype not in (np.float32, np.float64):
        raise InputError(f"x must be float32 or float64, got dtype {x.dtype}")
    if y.shape != (x.shape[0],):
        raise InputError(f"y must have shape ({x.shape[0]},) to match x, got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise InputError(f"y must be an integer array of class labels, got dtype {y.dtype}")
    bad_labels = label_range_error(y)
    if bad_labels:
        raise InputError(f"labels out of range {bad_labels}")
    nonfinite = ~np.isfinite(x).reshape(x.shape[0], -1).all(axis=1)
    if nonfinite.any():
        raise InputError(f"x contains NaN or inf in samples {np.flatnonzero(nonfinite)[:10].tolist()}")


def make_batch(batch_size: int, seed: int = 0, dtype: str = "float32") -> tuple[np.ndarray, np.ndarray]:
    """A seeded synthetic batch (standard normal images, uniform labels), as in the seed tutorial."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch_size, *INPUT_SHAPE)).astype(dtype)
    y = rng.integers(0, NUM_CLASSES, size=batch_size).astype(np.int64)
    return x, y


class MethodError(RuntimeError):
    """A per-sample method that cannot run here (e.g. torch.compile failing on this platform)."""


def check_method(method: str, methods: tuple[str, ...], chunk_size: int | None) -> str:
    if method not in methods:
        raise InputError(f"unknown method {method!r}; expected one of {methods}")
    if chunk_size is not None and method == "loop":
        raise InputError("chunk_size applies to the vectorised methods, not to 'loop'")
    return method


def available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux); None where it cannot be read."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_output_fits(batch_size: int, dtype: str) -> None:
    """The returned per-sample gradients alone need B x 1,199,882 values in host memory; refuse early."""
    need = batch_size * NUM_PARAMS * np.dtype(dtype).itemsize
    avail = available_memory_bytes()
    if avail is not None and need > avail:
        raise MemoryError(
            f"per-sample gradients for B={batch_size} in {dtype} need {need / 2**30:.1f} GiB of host memory "
            f"for the output alone, but only {avail / 2**30:.1f} GiB is available; use a smaller batch"
        )
