"""Canonical (state_dict names/layouts, numpy) <-> native Flax NNX ``nnx.State``.

Every layout change between the frameworks is a rule per layer KIND, ``KIND_LAYOUTS`` (native leaf ->
(canonical leaf, permutation applied to the canonical array)), registered once by the kind's own rule file
(``jax_impl.rules.register_layout``), e.g.
  nnx.Linear  kernel (in, out)  <- weight (out, in)       permutation (1, 0)       (``rules/linear.py``)
  nnx.Conv    kernel HWIO       <- weight OIHW            permutation (2, 3, 1, 0) (``rules/conv.py``)
  nnx.Embed   embedding (V, d)  <- weight (V, d)          unchanged                (``rules/embedding.py``)
A leaf not listed (biases, a layer of any other kind) keeps its name and layout.
The table per workload (``layout(model)``) is derived from the module itself: canonical name = the module's
path joined by "." + the canonical leaf, exactly torch's ``state_dict`` key since both sides use the same
attribute names. The flatten order before a linear layer is handled in the model (``models.common``), not here.
"""
from __future__ import annotations

from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from contract.spec import DEFAULT_MODEL, DeviceError, InputError
from contract.weights import source_dtypes, validate_weights
from jax_impl.model import Net, resolve
from jax_impl.rules import KIND_LAYOUTS  # noqa: F401 - re-exported: the layouts, registered by the kinds' files

Path = tuple  # a module's path in the graph: attribute names and list indices
Entry = tuple[Path, str, "tuple[int, ...] | None"]  # (module path, native leaf, permutation or None)

JAX_DTYPES = {"float32": jnp.float32, "float64": jnp.float64}


def own_params(module: nnx.Module) -> list[str]:
    """The module's direct parameter leaves (not its children's), in attribute order."""
    return [k for k, v in vars(module).items() if isinstance(v, nnx.Param)]


def param_modules(root: nnx.Module) -> list[tuple[Path, nnx.Module]]:
    """(path, module) of every module in the graph that owns parameters directly."""
    return [(p, m) for p, m in nnx.iter_graph(root) if isinstance(m, nnx.Module) and own_params(m)]


def path_name(path: Path) -> str:
    return ".".join(str(p) for p in path)


def replace_module(root: nnx.Module, path: Path, new: nnx.Module) -> nnx.Module:
    """``root`` with its module at ``path`` replaced by ``new`` (in place); ``new`` itself for the root's path ()."""
    if not path:
        return new
    parent = root
    for p in path[:-1]:
        parent = parent[p] if isinstance(p, int) else getattr(parent, p)
    if isinstance(path[-1], int):
        parent[path[-1]] = new
    else:
        setattr(parent, path[-1], new)
    return root


def _native_table(root: nnx.Module) -> dict[str, Entry]:
    """{canonical name: (module path, native leaf, permutation)} of ``root``'s parameters, in graph order."""
    table: dict[str, Entry] = {}
    for path, module in param_modules(root):
        rules = KIND_LAYOUTS.get(type(module), {})
        for leaf in own_params(module):
            canonical_leaf, perm = rules.get(leaf, (leaf, None))
            table[f"{path_name(path)}.{canonical_leaf}" if path else canonical_leaf] = (path, leaf, perm)
    return table


def canonical_shapes(root: nnx.Module) -> dict[str, tuple[int, ...]]:
    """{canonical name: canonical shape} of a module's parameters (a network built with other sizes: its own)."""
    out = {}
    for name, (path, leaf, perm) in _native_table(root).items():
        module = root
        for p in path:
            module = module[p] if isinstance(p, int) else getattr(module, p)
        native = tuple(getattr(module, leaf).shape)
        out[name] = native if perm is None else tuple(native[int(i)] for i in np.argsort(perm))
    return out


@lru_cache(maxsize=None)
def _layout(net: Net) -> dict[str, Entry]:
    table = _native_table(net.abstract_module)
    expected = net.spec.param_shapes
    assert set(table) == set(expected), f"{net.spec.name}: native params {sorted(table)} != canonical {list(expected)}"
    return {name: table[name] for name in expected}


def layout(model: str | Net = DEFAULT_MODEL) -> dict[str, Entry]:
    """{canonical name: (module path, native leaf, permutation)} in canonical (state_dict) order."""
    return _layout(resolve(model))



def precision_flags() -> dict[str, object]:
    """The precision in force (recorded with GPU results): every dot and convolution at ``PRECISION``."""
    from jax_impl.models.common import PRECISION

    return {"per_op_precision": str(PRECISION)}


def resolve_device(device: str | None) -> jax.Device:
    """None -> the default backend (GPU when present); "gpu" and "cuda" are aliases. Asking for a GPU where JAX
    sees none raises ``DeviceError`` (one line). Precision needs no switch here: every dot and convolution
    passes ``precision=jax_impl.model.PRECISION`` (HIGHEST: no TF32). Always a device of this process (with
    several processes, ``jax.devices()[0]`` belongs to process 0)."""
    if device is None:
        return jax.local_devices()[0]
    if device in ("cuda", "gpu"):
        try:
            return jax.local_devices(backend="gpu")[0]
        except RuntimeError as err:
            raise DeviceError(f"device='cuda' requested but JAX {jax.__version__} sees no GPU "
                              "(is its CUDA plugin installed? pip install -e '.[cuda]')") from err
    if device == "cpu":
        return jax.local_devices(backend="cpu")[0]
    raise InputError(f"unknown device {device!r}; expected 'cpu', 'cuda'/'gpu' or None")


def canonical_to_native_array(name: str, a: np.ndarray, model: str | Net = DEFAULT_MODEL) -> np.ndarray:
    _, _, perm = layout(model)[name]
    out = a if perm is None else np.transpose(a, perm)
    expected = tuple(resolve(model).spec.param_shapes[name][p] for p in perm) if perm else a.shape
    assert out.shape == expected, f"{name}: native shape {out.shape} != {expected}"
    return np.ascontiguousarray(out)


def native_to_canonical_array(
    name: str, a: np.ndarray, batch_axis: bool = False, model: str | Net = DEFAULT_MODEL
) -> np.ndarray:
    """Inverse of ``canonical_to_native_array``; with ``batch_axis`` the leading axis is carried along."""
    _, _, perm = layout(model)[name]
    lead = 1 if batch_axis else 0
    if perm is not None:
        inverse = tuple(int(i) + lead for i in np.argsort(perm))
        a = np.transpose(a, (*range(lead), *inverse))
    shape = resolve(model).spec.param_shapes[name]
    assert a.shape[lead:] == shape, f"{name}: canonical shape {a.shape[lead:]} != {shape}"
    return np.ascontiguousarray(a)


def _get(tree: dict, path: Path, leaf: str) -> object:
    for p in path:
        tree = tree[p]
    return tree[leaf]


def nested(flat: dict[tuple[Path, str], object]) -> dict:
    """{(path, leaf): value} -> the nested pure dict ``nnx.replace_by_pure_dict`` takes."""
    pure: dict = {}
    for (path, leaf), value in flat.items():
        node = pure
        for p in path:
            node = node.setdefault(p, {})
        node[leaf] = value
    return pure


def to_native(
    weights: dict[str, np.ndarray], dtype: str = "float32", device: str | None = None,
    model: str | Net = DEFAULT_MODEL,
) -> nnx.State:
    net = resolve(model)
    validate_weights(weights, model=net.spec, dtypes=source_dtypes(dtype))
    dev = resolve_device(device)
    flat = {(path, leaf): jax.device_put(canonical_to_native_array(name, weights[name], net)
                                         .astype(JAX_DTYPES[dtype]), dev)
            for name, (path, leaf, _) in layout(net).items()}
    state = jax.tree.map(lambda v: v, net.abstract_state)  # a fresh State to fill, not the shared template
    nnx.replace_by_pure_dict(state, nested(flat))
    return state


def to_canonical(params: nnx.State, batch_axis: bool = False, model: str | Net = DEFAULT_MODEL) -> dict[str, np.ndarray]:
    pure = nnx.to_pure_dict(params)
    return {
        name: native_to_canonical_array(name, np.asarray(_get(pure, path, leaf)), batch_axis, model)
        for name, (path, leaf, _) in layout(model).items()
    }
