"""Real training data for ``compare.train``; nothing is ever downloaded.

- ``load_digits28``: scikit-learn's packaged 8x8 handwritten digits (UCI, 1,797 images, shipped inside the
  package), bilinearly upsampled to 28x28 so the tutorial CNN runs unchanged, with a seeded stratified split.
- ``load_mnist``: MNIST from a local copy: a directory of the four IDX files (optionally ``.gz``) or an
  ``.npz`` with ``x_train, y_train, x_test, y_test`` (the layout of Keras' ``mnist.npz``).
Both return NCHW float32 images standardised with the training split's mean and std, labels int64 0..9.
"""
from __future__ import annotations

import gzip
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from compare.spec import INPUT_SHAPE, label_range_error

DIGITS_NAME = "sklearn-digits-8x8-upsampled-28x28"
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
_IDX_UBYTE = 0x08


class DataError(ValueError):
    """A data file that cannot be read, or whose images/labels are not MNIST-shaped digits 0..9."""


@dataclass(frozen=True)
class Dataset:
    """x_*: (N, 1, 28, 28) float32 NCHW, standardised; y_*: (N,) int64 in 0..9; ``name`` labels outputs."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "n_train": int(len(self.y_train)), "n_test": int(len(self.y_test))}


def _finish(name: str, images: dict[str, np.ndarray], labels: dict[str, np.ndarray], source: str) -> Dataset:
    """Check shapes and labels, then standardise with train statistics (no test information leaks in)."""
    for split in ("train", "test"):
        x, y = images[split], labels[split]
        if x.ndim != 3 or x.shape[1:] != INPUT_SHAPE[1:]:
            raise DataError(f"{source}: {split} images must have shape (N, 28, 28), got {x.shape}")
        if y.shape != (x.shape[0],):
            raise DataError(f"{source}: {split} labels shape {y.shape} does not match {x.shape[0]} images")
        bad_labels = label_range_error(y)
        if bad_labels:
            raise DataError(f"{source}: {split} labels outside {bad_labels}")
    mean, std = float(images["train"].mean()), float(images["train"].std())

    def prep(x: np.ndarray) -> np.ndarray:
        return ((x.astype(np.float64) - mean) / std).astype(np.float32)[:, None]

    return Dataset(
        name,
        prep(images["train"]),
        labels["train"].astype(np.int64),
        prep(images["test"]),
        labels["test"].astype(np.int64),
    )


def load_digits28(seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """scikit-learn's 8x8 digits, 0..16 ink scaled to [0, 1], upsampled x3.5 (bilinear) to 28x28."""
    from scipy.ndimage import zoom
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if not 0 < test_fraction < 1:
        raise DataError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    digits = load_digits()
    side = INPUT_SHAPE[1]
    images = zoom(digits.images / 16.0, (1, side / 8, side / 8), order=1).clip(0.0, 1.0)
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, digits.target, test_size=test_fraction, random_state=seed, stratify=digits.target
    )
    return _finish(DIGITS_NAME, {"train": x_tr, "test": x_te}, {"train": y_tr, "test": y_te}, "sklearn digits")


def read_idx(path: Path) -> np.ndarray:
    """An IDX file of unsigned bytes (LeCun's MNIST format), gzip-compressed when the name ends in ``.gz``."""
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as err:
        raise DataError(f"cannot read IDX file {path}: {err}") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != _IDX_UBYTE:
        raise DataError(f"{path} is not an IDX file of unsigned bytes (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", raw[4:header]) if len(raw) >= header else ()
    if len(dims) != ndim or len(raw) - header != int(np.prod(dims)):
        raise DataError(f"{path}: header says dims {dims} but the file holds {len(raw) - header} data bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find_idx(directory: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    raise DataError(f"MNIST directory {directory} has no {stem} (or {stem}.gz)")


def load_mnist(path: str | Path) -> Dataset:
    """MNIST from ``path``: a directory of the four IDX files or an ``.npz``; pixel values 0..255."""
    path = Path(path)
    if path.is_dir():
        arrays = {key: read_idx(_find_idx(path, stem)) for key, stem in IDX_FILES.items()}
    elif path.is_file():
        try:
            with np.load(path, allow_pickle=False) as npz:
                missing = [k for k in IDX_FILES if k not in npz.files]
                if missing:
                    raise DataError(f"{path}: npz lacks arrays {missing}; expected {list(IDX_FILES)}")
                arrays = {k: npz[k] for k in IDX_FILES}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            if isinstance(err, DataError):
                raise
            raise DataError(f"cannot read {path} as an .npz archive: {err}") from err
    else:
        raise DataError(f"MNIST data path {path} does not exist (give a directory of IDX files or an .npz)")
    for key in ("y_train", "y_test"):
        if not np.issubdtype(arrays[key].dtype, np.integer):
            raise DataError(f"{path}: {key} must hold integer labels, got dtype {arrays[key].dtype}")
    images = {s: arrays[f"x_{s}"].astype(np.float64) / 255.0 for s in ("train", "test")}
    return _finish(f"mnist:{path.name}", images, {s: arrays[f"y_{s}"] for s in ("train", "test")}, str(path))


def batch_indices(n: int, batch_size: int, *, steps: int, seed: int) -> Iterator[np.ndarray]:
    """``steps`` batches of exactly ``batch_size`` indices; a fresh seeded shuffle each epoch, remainder dropped.

    The same (n, batch_size, steps, seed) gives the same order, so both frameworks see the same batches.
    """
    if not 1 <= batch_size <= n:
        raise DataError(f"batch_size must lie in 1..{n} (the training set size), got {batch_size}")
    rng = np.random.default_rng(seed)
    per_epoch = n // batch_size
    for step in range(steps):
        if step % per_epoch == 0:
            order = rng.permutation(n)
        start = (step % per_epoch) * batch_size
        yield order[start : start + batch_size]
