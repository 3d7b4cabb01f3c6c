"""Datasets: the packaged digits, local MNIST (IDX, IDX.gz, npz) and the shared batch order."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from compare.training.data import IDX_FILES, DataError, batch_indices, load_digits28, load_mnist, read_idx


@pytest.fixture(scope="module")
def digits():
    return load_digits28(seed=0)


def tiny_mnist(n: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, n).astype(np.uint8),
        "x_test": rng.integers(0, 256, (n // 2, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, n // 2).astype(np.uint8),
    }


def write_idx(path: Path, arr: np.ndarray) -> None:
    raw = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
    with (gzip.open if path.suffix == ".gz" else open)(path, "wb") as fh:
        fh.write(raw)


def test_digits_are_28x28_standardised_with_a_stratified_split(digits):
    assert digits.x_train.shape == (1437, 1, 28, 28) and digits.x_test.shape == (360, 1, 28, 28)
    assert digits.x_train.dtype == np.float32 and digits.y_train.dtype == np.int64
    assert abs(digits.x_train.mean()) < 1e-5 and abs(digits.x_train.std() - 1) < 1e-5
    assert set(np.unique(digits.y_test)) == set(range(10))
    assert np.bincount(digits.y_test).min() >= 34  # stratified: ~36 per class out of 360
    assert "sklearn-digits" in digits.name


def test_digits_split_depends_only_on_the_seed(digits):
    again, other = load_digits28(seed=0), load_digits28(seed=1)
    np.testing.assert_array_equal(again.y_test, digits.y_test)
    np.testing.assert_array_equal(again.x_test, digits.x_test)
    assert not np.array_equal(other.x_test, digits.x_test)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_mnist_idx_directory_round_trip(tmp_path, suffix):
    arrays = tiny_mnist()
    for key, stem in IDX_FILES.items():
        write_idx(tmp_path / (stem + suffix), arrays[key])
    data = load_mnist(tmp_path)
    np.testing.assert_array_equal(data.y_train, arrays["y_train"])
    raw = arrays["x_train"] / 255.0
    restored = data.x_train[:, 0] * raw.std() + raw.mean()
    np.testing.assert_allclose(restored, raw, atol=1e-5)
    assert data.x_test.shape == (3, 1, 28, 28)


def test_mnist_npz_round_trip(tmp_path):
    arrays = tiny_mnist()
    np.savez(tmp_path / "mnist.npz", **arrays)
    data = load_mnist(tmp_path / "mnist.npz")
    np.testing.assert_array_equal(data.y_test, arrays["y_test"])
    assert data.name == "mnist:mnist.npz"


def test_bad_mnist_inputs_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_mnist(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip archive")
    with pytest.raises(DataError, match="cannot read"):
        load_mnist(tmp_path / "junk.npz")
    with pytest.raises(DataError, match="no train-images"):
        load_mnist(tmp_path)
    arrays = tiny_mnist()
    arrays["y_train"][2] = 11
    np.savez(tmp_path / "labels.npz", **arrays)
    with pytest.raises(DataError, match=r"outside 0\.\.9 at indices \[2\]"):
        load_mnist(tmp_path / "labels.npz")
    np.savez(tmp_path / "partial.npz", x_train=arrays["x_train"])
    with pytest.raises(DataError, match="lacks arrays"):
        load_mnist(tmp_path / "partial.npz")


def test_bad_idx_files_are_rejected(tmp_path):
    (tmp_path / "magic").write_bytes(b"\x00\x00\x0d\x01" + b"\x00" * 8)
    with pytest.raises(DataError, match="magic"):
        read_idx(tmp_path / "magic")
    write_idx(tmp_path / "short", np.zeros((4, 28, 28), np.uint8))
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-10])
    with pytest.raises(DataError, match="data bytes"):
        read_idx(tmp_path / "short")
    (tmp_path / "bad.gz").write_bytes(b"not gzip")
    with pytest.raises(DataError, match="cannot read"):
        read_idx(tmp_path / "bad.gz")


def test_batch_order_is_seeded_and_each_epoch_a_permutation():
    a = list(batch_indices(10, 3, steps=6, seed=4))
    b = list(batch_indices(10, 3, steps=6, seed=4))
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert all(len(idx) == 3 for idx in a)
    for epoch in (a[:3], a[3:]):  # 10 // 3 = 3 batches per epoch, one example dropped
        seen = np.concatenate(epoch)
        assert len(set(seen.tolist())) == 9
    assert not np.array_equal(np.concatenate(a[:3]), np.concatenate(a[3:]))
    with pytest.raises(DataError, match="batch_size"):
        next(batch_indices(10, 11, steps=1, seed=0))
    with pytest.raises(DataError, match="batch_size"):
        next(batch_indices(10, 0, steps=1, seed=0))
