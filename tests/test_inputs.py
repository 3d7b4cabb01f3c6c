"""Bad input gets a clear InputError (or WeightsError) naming the problem, on both sides, before any compute.

Labels matter most: JAX does not raise on an out-of-range gather index (measured with jax 0.10: label 10
gathers NaN and gets a zero gradient, label -1 wraps to class 9), so a wrong label would silently give a
wrong gradient; ``compare.spec.check_batch`` must catch it first.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from compare.frameworks import FRAMEWORKS, per_sample_module
from compare.spec import InputError
from compare.weights import WeightsError

pytestmark = pytest.mark.parametrize("framework", FRAMEWORKS)


def call(framework: str, weights, x, y, **options) -> dict[str, np.ndarray]:
    return per_sample_module(framework).per_sample_grads(weights, x, y, **{"device": "cpu", **options})


def good(batch) -> tuple[np.ndarray, np.ndarray]:
    x, y = batch
    return x.copy(), y.copy()


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((8, 28, 28), r"x must have shape \(B, 1, 28, 28\) \(NCHW\), got \(8, 28, 28\)"),
        ((8, 28, 28, 1), r"got \(8, 28, 28, 1\)"),  # NHWC by mistake
        ((8, 1, 28, 27), r"got \(8, 1, 28, 27\)"),
        ((0, 1, 28, 28), r"x is an empty batch \(B=0\)"),
    ],
)
def test_x_of_wrong_shape(framework: str, weights, shape, message: str):
    y = np.zeros(shape[0], np.int64)
    with pytest.raises(InputError, match=message):
        call(framework, weights, np.zeros(shape, np.float32), y)


@pytest.mark.parametrize("dtype", [np.int64, np.float16, np.uint8])
def test_x_of_wrong_dtype(framework: str, weights, batch, dtype):
    x, y = good(batch)
    with pytest.raises(InputError, match=f"x must be float32 or float64, got dtype {np.dtype(dtype)}"):
        call(framework, weights, x.astype(dtype), y)


@pytest.mark.parametrize("convert", [torch.from_numpy, np.ndarray.tolist], ids=["torch-tensor", "list"])
def test_x_not_a_numpy_array(framework: str, weights, batch, convert):
    x, y = good(batch)
    with pytest.raises(InputError, match="x and y must be numpy arrays"):
        call(framework, weights, convert(x), y)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_x_names_the_samples(framework: str, weights, batch, bad: float):
    x, y = good(batch)
    x[2, 0, 5, 5] = bad
    x[6, 0, 0, 0] = bad
    with pytest.raises(InputError, match=r"x contains NaN or inf in samples \[2, 6\]"):
        call(framework, weights, x, y)


@pytest.mark.parametrize("label", [-1, 10, 2**31])
def test_labels_out_of_range_name_index_and_value(framework: str, weights, batch, label: int):
    x, y = good(batch)
    y[3] = label
    with pytest.raises(InputError, match=rf"labels out of range 0..9 at indices \[3\] \(values \[{label}\]\)"):
        call(framework, weights, x, y)


@pytest.mark.parametrize(
    ("make_y", "message"),
    [
        (lambda y: y.astype(np.float32), "y must be an integer array of class labels, got dtype float32"),
        (lambda y: y.astype(bool), "y must be an integer array of class labels, got dtype bool"),
        (lambda y: y[:, None], r"y must have shape \(8,\) to match x, got \(8, 1\)"),
        (lambda y: y[:7], r"y must have shape \(8,\) to match x, got \(7,\)"),
    ],
    ids=["float", "bool", "column", "too-short"],
)
def test_labels_of_wrong_dtype_or_shape(framework: str, weights, batch, make_y, message: str):
    x, y = good(batch)
    with pytest.raises(InputError, match=message):
        call(framework, weights, x, make_y(y))


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("method", "vmapp", "unknown method 'vmapp'; expected one of"),
        ("loss", "cross_entropy", r"unknown loss 'cross_entropy'; expected one of \('nll_log_softmax', 'seed'\)"),
        ("dtype", "float16", r"unknown dtype 'float16'; expected one of \('float32', 'float64', 'bfloat16'\)"),
        ("dtype", np.float64, "unknown dtype"),  # a numpy type, not the name
        ("device", "tpu", "unknown device 'tpu'"),
    ],
)
def test_unknown_option(framework: str, weights, batch, option: str, value, message: str):
    with pytest.raises(InputError, match=message):
        call(framework, weights, *batch, **{option: value})


@pytest.mark.parametrize("chunk_size", [0, -3, 2.5, "4", True])
def test_bad_chunk_size(framework: str, weights, batch, chunk_size):
    with pytest.raises(InputError, match=f"chunk_size must be a positive integer or None, got {chunk_size!r}"):
        call(framework, weights, *batch, method="vmap", chunk_size=chunk_size)


def test_chunk_size_with_loop(framework: str, weights, batch):
    with pytest.raises(InputError, match="chunk_size applies to the vectorised methods, not to 'loop'"):
        call(framework, weights, *batch, method="loop", chunk_size=2)


def test_bad_weights(framework: str, weights, batch):
    bad = {**weights, "fc1.weight": np.ascontiguousarray(weights["fc1.weight"].T)}
    with pytest.raises(WeightsError, match=r"fc1\.weight: expected shape \(128, 9216\), found \(9216, 128\)"):
        call(framework, bad, *batch)


def test_native_fn_and_reference_fn_validate_too(framework: str):
    mod = per_sample_module(framework)
    with pytest.raises(InputError, match="unknown method 'fast'"):
        mod.native_fn("fast")
    with pytest.raises(InputError, match="unknown loss 'mse'"):
        mod.reference_fn(loss="mse")
