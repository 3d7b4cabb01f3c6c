"""Training data for ``compare.train``; nothing is ever downloaded.

Real data serves the 28x28 workloads (``seed_cnn``, ``mnist_cnn``):
- ``load_digits28``: scikit-learn's packaged 8x8 handwritten digits (UCI, 1,797 images, shipped inside the
  package), bilinearly upsampled to 28x28 so the tutorial CNN runs unchanged, with a seeded stratified split.
- ``load_mnist``: MNIST from a local copy: a directory of the four IDX files (optionally ``.gz``) or an
  ``.npz`` with ``x_train, y_train, x_test, y_test`` (the layout of Keras' ``mnist.npz``).
Both return NCHW float32 images standardised with the training split's mean and std, labels int64 0..9.

The other workloads (``logreg``/``ffnn``: 104 features, ``cifar10_cnn``: 3x32x32 images, ``embed``: 256 token
ids) have no packaged dataset here and no network to fetch one, so ``load_teacher_task`` builds a *synthetic*
task of the workload's input shape, and says so in its name (``synthetic-teacher:<model>...``) and description:
- inputs like ``compare.spec.make_batch``'s: standard normal features/images, uniform token ids;
- labels: argmax of a fixed teacher network *of the same workload* (PyTorch default init at seed
  ``TEACHER_SEED_OFFSET + seed``, never the student's seed-0 init), its logits centred per class over the pool
  so the classes are roughly balanced (two classes: split at the median logit margin, exactly balanced).
The student can represent the teacher, so the task is learnable and the test accuracy is meaningful, but it
measures fitting a random teacher, not a real-data result; the point of these runs is that both frameworks
train the same workload to the same curve (tests/test_train.py: float64, to ~1e-12). At the CLI's defaults
(5 epochs, B=64, lr 0.5, sigma 0.8) logreg/ffnn learn their teacher (test accuracy ~0.91 / ~0.79 at seed 0);
embed's (10,004 token scores, each seen ~50 times) stays near chance: there only the agreement is the result.
"""
from __future__ import annotations

import gzip
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from compare.training.streams import BatchOrder
from compare.spec import INPUT_SHAPE, MODELS, Workload, check_model, label_range_error

DIGITS_NAME = "sklearn-digits-8x8-upsampled-28x28"
DIGITS_DESCRIPTION = ("real data: scikit-learn's packaged 8x8 handwritten digits (1,797 images), upsampled to "
                      "28x28, seeded stratified 80/20 split")
TEACHER_SEED_OFFSET = 10_000  # the teacher's init seed = this + --seed; the student starts from seed 0
TEACHER_N_TRAIN, TEACHER_N_TEST = 2048, 512
# the workloads real 28x28 digits serve (everything else trains on the synthetic teacher task)
IMAGE28_MODELS: tuple[str, ...] = tuple(n for n, w in MODELS.items() if w.input_shape == INPUT_SHAPE)
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
    """x_*: (N, *the workload's input shape): float32 (images NCHW, standardised) or int64 token ids;
    y_*: (N,) int64 class labels; ``name`` labels outputs, ``description`` says what the data is (real/synthetic)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    description: str = ""
    synthetic: bool = False

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "n_train": int(len(self.y_train)), "n_test": int(len(self.y_test)),
                "synthetic": self.synthetic, "description": self.description,
                "train_class_counts": np.bincount(self.y_train).tolist()}


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
        description=DIGITS_DESCRIPTION if name == DIGITS_NAME else f"real data: MNIST from the local copy {source}",
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


def teacher_labels(x: np.ndarray, model: str | Workload, seed: int) -> np.ndarray:
    """Labels of a fixed random teacher of the workload (PyTorch forward in chunks), classes roughly balanced."""
    import torch
    from torch.func import functional_call

    from compare.frameworks import side
    from compare.weights import init_weights

    torch_side = side("torch")
    net = torch_side.resolve(check_model(model).name)
    native_x = torch_side.native_x
    params = torch_side.to_native(init_weights(TEACHER_SEED_OFFSET + seed, net.spec.name), "float32", "cpu", model=net)
    with torch.no_grad():
        logits = np.concatenate([
            functional_call(net.module, params, (native_x(x[i : i + 256], "float32", torch.device("cpu")),)).numpy()
            for i in range(0, len(x), 256)]).astype(np.float64)
    if logits.shape[1] == 2:
        margin = logits[:, 1] - logits[:, 0]
        return (margin > np.median(margin)).astype(np.int64)
    return np.argmax(logits - logits.mean(axis=0), axis=1).astype(np.int64)


def load_teacher_task(model: str | Workload, seed: int = 0, n_train: int = TEACHER_N_TRAIN,
                      n_test: int = TEACHER_N_TEST) -> Dataset:
    """The seeded synthetic task of a workload without packaged data (see the module docstring)."""
    w = check_model(model)
    rng = np.random.default_rng([seed, 2])  # independent of the batch order's and the noise's streams
    n = n_train + n_test
    if w.tokens:
        x = rng.integers(0, w.vocab_size, size=(n, *w.input_shape)).astype(np.int64)
    else:
        x = rng.standard_normal((n, *w.input_shape)).astype(np.float32)
    y = teacher_labels(x, w, seed)
    inputs = (f"uniform token ids below {w.vocab_size}" if w.tokens else "standard normal inputs") + \
        f" of shape {w.input_shape}"
    return Dataset(f"synthetic-teacher:{w.name}", x[:n_train], y[:n_train], x[n_train:], y[n_train:],
                   description=f"SYNTHETIC (no packaged {w.name} data): {inputs}, labels = argmax of a fixed random "
                               f"{w.name} teacher (init seed {TEACHER_SEED_OFFSET + seed}), classes balanced by "
                               f"centring its logits; {n_train} train / {n_test} test examples",
                   synthetic=True)


def load_for_model(model: str, seed: int, data: Path | None) -> Dataset:
    """The training data of a workload: real digits (or ``data``, local MNIST) for 28x28 inputs, else synthetic."""
    if model in IMAGE28_MODELS:
        return load_digits28(seed) if data is None else load_mnist(data)
    if data is not None:
        raise DataError(f"--data (local MNIST) feeds only the 28x28 workloads {IMAGE28_MODELS}; model {model!r} "
                        f"trains on its synthetic teacher task (drop --data or that model)")
    return load_teacher_task(model, seed)


def batch_indices(n: int, batch_size: int, *, steps: int, seed: int) -> Iterator[np.ndarray]:
    """``steps`` batches of exactly ``batch_size`` indices; a fresh seeded shuffle each epoch, remainder dropped.

    The same (n, batch_size, steps, seed) gives the same order, so both frameworks see the same batches
    (``streams.BatchOrder``, which a resumed run restores).
    """
    if not 1 <= batch_size <= n:
        raise DataError(f"batch_size must lie in 1..{n} (the training set size), got {batch_size}")
    order = BatchOrder(n, batch_size, seed)
    for _ in range(steps):
        yield order.next()
