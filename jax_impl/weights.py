"""Canonical (state_dict names/layouts, numpy) <-> native Flax NNX ``nnx.State``.

Every layout change between the frameworks is listed once, in ``LAYOUT``:
  conv  OIHW -> HWIO                    permutation (2, 3, 1, 0)
  fc1   (128, 9216) with inputs in (C, H, W) order -> (9216, 128) with inputs in (H, W, C) order:
        viewed as (O, C, 12, 12) it is a 12x12 "conv" kernel, so it takes the conv permutation too.
        This is the one place where the NCHW-vs-NHWC flatten order is handled.
  fc2   (out, in) -> (in, out)          permutation (1, 0)
  bias  unchanged.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from compare.spec import PARAM_SHAPES, DeviceError, InputError
from compare.weights import validate_weights
from jax_impl.model import ABSTRACT_STATE

OIHW_TO_HWIO = (2, 3, 1, 0)
FC1_AS_CONV = (128, 64, 12, 12)  # fc1.weight viewed as (O, C, H, W)

# canonical name -> (native module, native leaf, permutation or None, reshape-before-permute or None)
LAYOUT: dict[str, tuple[str, str, tuple[int, ...] | None, tuple[int, ...] | None]] = {
    "conv1.weight": ("conv1", "kernel", OIHW_TO_HWIO, None),
    "conv1.bias": ("conv1", "bias", None, None),
    "conv2.weight": ("conv2", "kernel", OIHW_TO_HWIO, None),
    "conv2.bias": ("conv2", "bias", None, None),
    "fc1.weight": ("fc1", "kernel", OIHW_TO_HWIO, FC1_AS_CONV),
    "fc1.bias": ("fc1", "bias", None, None),
    "fc2.weight": ("fc2", "kernel", (1, 0), None),
    "fc2.bias": ("fc2", "bias", None, None),
}

JAX_DTYPES = {"float32": jnp.float32, "float64": jnp.float64}


def resolve_device(device: str | None) -> jax.Device:
    """None -> the default backend (GPU when present); "gpu" and "cuda" are aliases. Asking for a GPU where JAX
    sees none raises ``DeviceError`` (one line). Precision needs no switch here: every dot and convolution
    passes ``precision=jax_impl.model.PRECISION`` (HIGHEST: no TF32)."""
    if device is None:
        return jax.devices()[0]
    if device in ("cuda", "gpu"):
        try:
            return jax.devices("gpu")[0]
        except RuntimeError as err:
            raise DeviceError(f"device='cuda' requested but JAX {jax.__version__} sees no GPU "
                              "(is its CUDA plugin installed? pip install -e '.[cuda]')") from err
    if device == "cpu":
        return jax.devices("cpu")[0]
    raise InputError(f"unknown device {device!r}; expected 'cpu', 'cuda'/'gpu' or None")


def _native_shape(name: str) -> tuple[int, ...]:
    _, _, perm, view = LAYOUT[name]
    shape = view or PARAM_SHAPES[name]
    if perm is None:
        return shape
    permuted = tuple(shape[p] for p in perm)
    return permuted if view is None else (int(np.prod(permuted[:-1])), permuted[-1])


def canonical_to_native_array(name: str, a: np.ndarray) -> np.ndarray:
    _, _, perm, view = LAYOUT[name]
    if view is not None:
        a = a.reshape(view)
    if perm is not None:
        a = np.transpose(a, perm)
    if view is not None:
        a = a.reshape(-1, a.shape[-1])
    assert a.shape == _native_shape(name), f"{name}: native shape {a.shape} != {_native_shape(name)}"
    return np.ascontiguousarray(a)


def native_to_canonical_array(name: str, a: np.ndarray, batch_axis: bool = False) -> np.ndarray:
    """Inverse of ``canonical_to_native_array``; with ``batch_axis`` the leading axis is carried along."""
    _, _, perm, view = LAYOUT[name]
    lead = a.shape[:1] if batch_axis else ()
    assert a.shape[len(lead):] == _native_shape(name), f"{name}: native shape {a.shape[len(lead):]}"
    if view is not None:
        a = a.reshape(*lead, *(view[p] for p in perm))
    if perm is not None:
        inverse = tuple(int(i) + len(lead) for i in np.argsort(perm))
        a = np.transpose(a, (*range(len(lead)), *inverse))
    a = a.reshape(*lead, *PARAM_SHAPES[name])
    return np.ascontiguousarray(a)


def to_native(weights: dict[str, np.ndarray], dtype: str = "float32", device: str | None = None) -> nnx.State:
    validate_weights(weights)
    dev = resolve_device(device)
    pure: dict[str, dict[str, jax.Array]] = {}
    for name, (module, leaf, _, _) in LAYOUT.items():
        arr = canonical_to_native_array(name, weights[name]).astype(JAX_DTYPES[dtype])
        pure.setdefault(module, {})[leaf] = jax.device_put(arr, dev)
    state = jax.tree.map(lambda v: v, ABSTRACT_STATE)  # a fresh State to fill, not the shared template
    nnx.replace_by_pure_dict(state, pure)
    return state


def to_canonical(params: nnx.State, batch_axis: bool = False) -> dict[str, np.ndarray]:
    pure = nnx.to_pure_dict(params)
    return {
        name: native_to_canonical_array(name, np.asarray(pure[module][leaf]), batch_axis)
        for name, (module, leaf, _, _) in LAYOUT.items()
    }
