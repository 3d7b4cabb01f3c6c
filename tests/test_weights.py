"""The shared weights file and the canonical <-> native conversions of both sides."""
from __future__ import annotations

import os
from pathlib import Path

import jax
import numpy as np
import pytest
import safetensors.numpy

from compare.frameworks import FRAMEWORKS, impl_module
from compare.spec import PARAM_SHAPES, InputError
from compare.weights import WeightsError, init_weights, load_weights, save_weights, validate_weights


def random_weights(seed: int) -> dict[str, np.ndarray]:
    """Canonical weights with every entry distinct (standard normal), so any misplaced entry shows."""
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in PARAM_SHAPES.items()}


# --- init_weights -------------------------------------------------------------------------------------------


def test_init_weights_is_canonical_deterministic_and_seeded():
    a, b, other = init_weights(0), init_weights(0), init_weights(1)
    validate_weights(a)
    assert list(a) == list(PARAM_SHAPES)
    assert all(np.array_equal(a[k], b[k]) for k in PARAM_SHAPES)
    assert not any(np.array_equal(a[k], other[k]) for k in PARAM_SHAPES)


# --- save / load --------------------------------------------------------------------------------------------


def test_save_load_round_trip_is_exact(tmp_path: Path):
    weights = random_weights(0)
    path = save_weights(tmp_path / "sub" / "w.safetensors", weights)
    loaded = load_weights(path)
    assert list(loaded) == list(PARAM_SHAPES)
    for k in PARAM_SHAPES:
        assert loaded[k].dtype == np.float32
        np.testing.assert_array_equal(loaded[k], weights[k])
    assert sorted(p.name for p in path.parent.iterdir()) == ["w.safetensors"]  # no temp file left behind


def test_save_replaces_an_existing_file(tmp_path: Path):
    path = save_weights(tmp_path / "w.safetensors", random_weights(0))
    new = random_weights(1)
    save_weights(path, new)
    np.testing.assert_array_equal(load_weights(path)["fc1.weight"], new["fc1.weight"])


def test_failed_save_keeps_the_old_file_and_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A crash mid-write (simulated: half a file written, then an error) must not touch the existing file."""
    old = random_weights(0)
    path = save_weights(tmp_path / "w.safetensors", old)

    def crash(tensors: dict, filename: str, metadata: dict | None = None) -> None:
        Path(filename).write_bytes(b"\x00" * 100)
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.numpy, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        save_weights(path, random_weights(1))
    np.testing.assert_array_equal(load_weights(path)["conv2.weight"], old["conv2.weight"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]


def test_save_rejects_invalid_weights_and_writes_nothing(tmp_path: Path):
    bad = random_weights(0)
    bad["fc2.bias"] = bad["fc2.bias"].astype(np.float64)
    with pytest.raises(WeightsError, match=r"fc2\.bias: expected dtype float32, found float64"):
        save_weights(tmp_path / "w.safetensors", bad)
    assert list(tmp_path.iterdir()) == []


def test_missing_file(tmp_path: Path):
    with pytest.raises(WeightsError, match="weights file not found: .*nope.safetensors"):
        load_weights(tmp_path / "nope.safetensors")


def _valid_bytes(tmp_path: Path) -> bytes:
    return save_weights(tmp_path / "valid.safetensors", random_weights(0)).read_bytes()


@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(lambda good: b"", id="empty"),
        pytest.param(lambda good: os.urandom(4096), id="garbage"),
        pytest.param(lambda good: good[:10], id="truncated-header-length"),
        pytest.param(lambda good: good[: len(good) // 2], id="truncated-data"),
        pytest.param(lambda good: good[:8] + b"{" * (len(good) - 8), id="header-not-json"),
    ],
)
def test_corrupt_file(tmp_path: Path, corrupt):
    path = tmp_path / "w.safetensors"
    path.write_bytes(corrupt(_valid_bytes(tmp_path)))
    with pytest.raises(WeightsError, match=r"w\.safetensors is not a readable safetensors file"):
        load_weights(path)


def _renamed(w: dict, old: str, new: str) -> dict:
    return {(new if k == old else k): v for k, v in w.items()}


@pytest.mark.parametrize(
    ("mutate", "expected_message"),
    [
        pytest.param(
            lambda w: {k: v for k, v in w.items() if k != "fc1.bias"},
            r"missing key\(s\) \['fc1.bias'\], unexpected key\(s\) \[\]; expected keys .*fc1.bias.*found keys",
            id="missing-key",
        ),
        pytest.param(
            lambda w: {**w, "fc3.weight": np.zeros((2, 2), np.float32)},
            r"missing key\(s\) \[\], unexpected key\(s\) \['fc3.weight'\]",
            id="extra-key",
        ),
        pytest.param(
            lambda w: _renamed(w, "conv1.weight", "conv1.kernel"),
            r"missing key\(s\) \['conv1.weight'\], unexpected key\(s\) \['conv1.kernel'\]",
            id="renamed-key",
        ),
        pytest.param(  # a JAX-layout fc1 written by mistake
            lambda w: {**w, "fc1.weight": np.ascontiguousarray(w["fc1.weight"].T)},
            r"fc1\.weight: expected shape \(128, 9216\), found \(9216, 128\)",
            id="wrong-shape",
        ),
        pytest.param(
            lambda w: {**w, "conv2.bias": w["conv2.bias"].astype(np.float64)},
            r"conv2\.bias: expected dtype float32 \(F32\), found F64",
            id="wrong-dtype-float64",
        ),
        pytest.param(
            lambda w: {**w, "conv2.bias": w["conv2.bias"].astype(np.int32)},
            r"conv2\.bias: expected dtype float32 \(F32\), found I32",
            id="wrong-dtype-int",
        ),
        pytest.param(
            lambda w: {**w, "fc2.weight": np.full((10, 128), np.nan, np.float32)},
            r"fc2\.weight: expected finite values, found NaN or inf",
            id="nan",
        ),
    ],
)
def test_mismatched_file(tmp_path: Path, mutate, expected_message: str):
    """Files written by something other than ``save_weights`` (which would refuse them) are rejected on load."""
    path = tmp_path / "w.safetensors"
    safetensors.numpy.save_file(mutate(random_weights(0)), str(path))
    with pytest.raises(WeightsError, match=expected_message):
        load_weights(path)


def test_bfloat16_file_is_a_weights_error_not_a_numpy_type_error(tmp_path: Path):
    """numpy cannot decode bfloat16; the header check must catch it first and name the key."""
    import torch
    import safetensors.torch

    path = tmp_path / "w.safetensors"
    safetensors.torch.save_file({k: torch.from_numpy(v).bfloat16() for k, v in random_weights(0).items()}, str(path))
    with pytest.raises(WeightsError, match=r"conv1\.weight: expected dtype float32 \(F32\), found BF16"):
        load_weights(path)


@pytest.mark.parametrize("bad", [None, [np.zeros(3, np.float32)]], ids=["none", "list"])
def test_validate_rejects_a_non_dict(bad):
    with pytest.raises(WeightsError, match=f"expected a dict of arrays, got {type(bad).__name__}"):
        validate_weights(bad)


def test_validate_rejects_a_non_array_value():
    weights = {**random_weights(0), "fc2.bias": [0.0] * 10}
    with pytest.raises(WeightsError, match=r"fc2\.bias: expected numpy array, found list"):
        validate_weights(weights)


# --- canonical <-> native -----------------------------------------------------------------------------------


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_canonical_native_canonical_is_exact(framework: str, dtype: str):
    mod = impl_module(framework, "weights")
    weights = random_weights(2)
    back = mod.to_canonical(mod.to_native(weights, dtype, "cpu"))
    assert list(back) == list(PARAM_SHAPES)
    for k in PARAM_SHAPES:
        assert back[k].dtype == np.dtype(dtype)
        np.testing.assert_array_equal(back[k], weights[k])  # float32 -> float64 is exact too


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_native_params_do_not_alias_the_canonical_arrays(framework: str):
    """Editing the caller's arrays after conversion must not change the native parameters (nor the reverse);
    read-only inputs (e.g. shared, cached weights) convert without a warning."""
    mod = impl_module(framework, "weights")
    weights = random_weights(3)
    for arr in weights.values():
        arr.setflags(write=False)
    native = mod.to_native(weights, "float32", "cpu")
    expected = {k: v.copy() for k, v in weights.items()}
    for arr in weights.values():
        arr.setflags(write=True)
        arr += 1.0
    back = mod.to_canonical(native)
    for k in PARAM_SHAPES:
        np.testing.assert_array_equal(back[k], expected[k], err_msg=k)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_canonical_with_batch_axis_keeps_samples_apart(framework: str):
    """Per-sample gradients come back with a leading axis; each sample must map to its own canonical array."""
    mod = impl_module(framework, "weights")
    samples = [random_weights(s) for s in range(3)]
    natives = [mod.to_native(w, "float64", "cpu") for w in samples]
    if framework == "jax":
        stacked = jax.tree.map(lambda *leaves: jax.numpy.stack(leaves), *natives)
    else:
        import torch

        stacked = {k: torch.stack([n[k] for n in natives]) for k in natives[0]}
    back = mod.to_canonical(stacked, batch_axis=True)
    for k in PARAM_SHAPES:
        np.testing.assert_array_equal(back[k], np.stack([w[k] for w in samples]))


def test_jax_layout_lists_every_parameter_and_matches_the_flax_shapes():
    from flax import nnx

    from jax_impl.model import ABSTRACT_STATE
    from jax_impl.weights import canonical_to_native_array, layout

    table = layout("seed_cnn")
    assert set(table) == set(PARAM_SHAPES)
    flax_shapes = {m: {leaf: v.shape for leaf, v in d.items()} for m, d in nnx.to_pure_dict(ABSTRACT_STATE).items()}
    for name, (path, leaf, _) in table.items():
        assert canonical_to_native_array(name, random_weights(0)[name]).shape == flax_shapes[path[0]][leaf], name


def test_jax_conv_kernel_is_hwio():
    """conv1.weight[o, i, h, w] must land at kernel[h, w, i, o] (Flax's HWIO)."""
    from jax_impl.weights import canonical_to_native_array

    w = np.zeros(PARAM_SHAPES["conv2.weight"], np.float32)
    w[5, 7, 0, 2] = 1.0
    kernel = canonical_to_native_array("conv2.weight", w)
    assert kernel.shape == (3, 3, 32, 64)
    assert list(zip(*np.nonzero(kernel))) == [(0, 2, 7, 5)]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_to_native_validates(framework: str):
    bad = {k: v for k, v in random_weights(0).items() if k != "conv1.bias"}
    with pytest.raises(WeightsError, match="conv1.bias"):
        impl_module(framework, "weights").to_native(bad, "float32", "cpu")


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_unknown_device_is_an_input_error(framework: str):
    with pytest.raises(InputError, match="unknown device 'tpu0'"):
        impl_module(framework, "weights").resolve_device("tpu0")
