"""Per-sample gradients from per-layer-KIND rules (mirrors ``torch_impl.per_layer``).

One batched forward, one batched backward to the OUTPUTS of every layer that owns parameters, then each
layer's per-sample gradients from its input ``a`` and output cotangent ``g`` by the rule of its kind
(``jax_impl.rules``: nnx.Linear, nnx.Conv, nnx.Embed; anything else by the vmap fallback). The layers are found
from the model itself: the merged module's graph (``nnx.iter_graph``) is instrumented, each parameterised
module replaced by a ``_Probe`` that records its input and adds a zero "probe" to its output (a module that
applies its parameters through a parameter-free ``Projection`` / ``GateInput`` child: the child is probed,
``rules.site_child``; the LSTM's recorded input is completed by its hidden states when it returns, ``rules.site_input``);
``jax.grad`` w.r.t. the probes is the cotangent of the outputs. Nothing here names a model's layers.
The backward differentiates the SUM of per-example losses (= B x the mean loss), so each sample's cotangent
is exactly its own single-example loss gradient (the mean's 1/B undone). A layer called more than once per
forward has one site per call ("fc", "fc@1", ...); its per-sample gradient is the sum over its sites.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from contract.spec import DEFAULT_MODEL
from jax_impl import rules
from jax_impl.model import Net, loss_fn, resolve
from jax_impl.weights import nested, param_modules, path_name, replace_module

Params = nnx.State
Arrays = dict[str, jax.Array]


def site_layer(site: str) -> str:
    """The layer path of a site: "fc1" for "fc1" (first call) and for "fc1@1" (second call)."""
    return site.split("@")[0]


class _Tape:
    """What one instrumented forward records: each site's input and output shape; adds the probes."""

    def __init__(self, probes: Arrays | None) -> None:
        self.probes, self.inputs, self.shapes = probes, {}, {}

    def record(self, name: str, a: jax.Array, out: jax.Array) -> jax.Array:
        calls = sum(1 for s in self.inputs if site_layer(s) == name)
        site = name if calls == 0 else f"{name}@{calls}"
        self.inputs[site], self.shapes[site] = a, jax.ShapeDtypeStruct(out.shape, out.dtype)
        return out if self.probes is None else out + self.probes[site]

    def complete(self, name: str, out: jax.Array, fn: Callable[[jax.Array, jax.Array], jax.Array]) -> None:
        """The latest site of layer ``name`` (recorded inside this call) gets input fn(its input, layer output)."""
        site = [s for s in self.inputs if site_layer(s) == name][-1]
        self.inputs[site] = fn(self.inputs[site], out)


class _Probe(nnx.Module):
    def __init__(self, inner: nnx.Module, name: str, tape: _Tape) -> None:
        self.inner, self.name, self.tape = inner, name, tape

    def __call__(self, x: jax.Array, *args: object, **kwargs: object) -> jax.Array:
        return self.tape.record(self.name, x, self.inner(x, *args, **kwargs))


class _Completed(nnx.Module):
    """A layer whose kind completes its site's recorded input from the layer's output (``rules.site_input``)."""

    def __init__(self, inner: nnx.Module, name: str, tape: _Tape,
                 fn: Callable[[jax.Array, jax.Array], jax.Array]) -> None:
        self.inner, self.name, self.tape, self.fn = inner, name, tape, fn

    def __call__(self, x: jax.Array, *args: object, **kwargs: object) -> jax.Array:
        out = self.inner(x, *args, **kwargs)
        self.tape.complete(self.name, out, self.fn)
        return out


def _instrument(root: nnx.Module, tape: _Tape) -> nnx.Module:
    """Replace every parameterised module of ``root`` (a freshly merged copy) by a ``_Probe`` around it;
    deepest first, so a parent's path stays walkable while its children are replaced."""
    for path, module in sorted(param_modules(root), key=lambda pm: -len(pm[0])):
        name = path_name(path)
        child = rules.site_child(module)
        if child is None:
            root = replace_module(root, path, _Probe(module, name, tape))
            continue
        # the layer applies its parameters through this child: probe the child's calls
        complete = rules.site_input(module)  # asked before the child is replaced by its probe
        setattr(module, child[0], _Probe(child[1], name, tape))
        if complete is not None:
            root = replace_module(root, path, _Completed(module, name, tape, complete))
    return root


def layer_site(layer: nnx.Module, a: jax.Array, g: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(the input, the output cotangent) the engine records at ``layer``'s site when the layer's own input is a and
    its output's cotangent g (mirrors torch's): (a, g) for most kinds; the LSTM's ([x; h_prev], d loss / d gates).
    One forward and backward of (a copy of) the layer alone."""
    graphdef, state = nnx.split(layer)

    def run(tape: _Tape) -> jax.Array:
        return jnp.sum(_instrument(nnx.merge(graphdef, state), tape)(a) * g)

    shapes = _Tape(None)
    jax.eval_shape(lambda: run(shapes))

    def total(probes: Arrays) -> tuple[jax.Array, Arrays]:
        tape = _Tape(probes)
        return run(tape), tape.inputs

    probes = {site: jnp.zeros(s.shape, s.dtype) for site, s in shapes.shapes.items()}
    cots, inputs = jax.grad(total, has_aux=True)(probes)
    return inputs[""], cots[""]


def layers(params: Params, model: str | Net = DEFAULT_MODEL) -> dict[str, nnx.Module]:
    """{layer name: module} of every parameterised module, merged with ``params`` (for rules that read them)."""
    return {path_name(p): m for p, m in param_modules(nnx.merge(resolve(model).graphdef, params))}


def forward_to_outputs(
    params: Params, x: jax.Array, probes: Arrays | None, model: str | Net = DEFAULT_MODEL
) -> tuple[jax.Array, Arrays]:
    """The model's forward with ``probes[site]`` added to each site's output (None: no probes); also returns
    each site's input. x: the workload's batch -> (logits (B, classes), inputs {site: a}); conv a are NHWC."""
    tape = _Tape(probes)
    logits = _instrument(nnx.merge(resolve(model).graphdef, params), tape)(x)
    return logits, tape.inputs


@lru_cache(maxsize=None)
def _shapes(net: Net, x_shape: tuple[int, ...], x_dtype: str) -> dict[str, tuple[int, ...]]:
    shapes: dict = {}

    def run(params: Params, x: jax.Array) -> None:
        tape = _Tape(None)
        _instrument(nnx.merge(net.graphdef, params), tape)(x)
        shapes.update(tape.shapes)

    jax.eval_shape(run, net.abstract_state, jax.ShapeDtypeStruct(x_shape, x_dtype))
    return {site: s.shape for site, s in shapes.items()}


def output_shapes(batch_size: int, model: str | Net = DEFAULT_MODEL) -> dict[str, tuple[int, ...]]:
    """Shapes of each site's output (NHWC for convs), for a batch of ``batch_size``."""
    net = resolve(model)
    dtype = "int32" if net.spec.tokens else "float32"
    return _shapes(net, (batch_size, *net.spec.input_shape), dtype)


def zero_probes(params: Params, x: jax.Array, model: str | Net = DEFAULT_MODEL) -> Arrays:
    """Zeros shaped like each site's output, in the parameters' dtype."""
    dtype = jax.tree.leaves(params)[0].dtype
    return {k: jnp.zeros(s, dtype) for k, s in output_shapes(x.shape[0], model).items()}


def output_cotangents(
    params: Params, x: jax.Array, y: jax.Array, loss: str, model: str | Net = DEFAULT_MODEL
) -> tuple[Arrays, Arrays]:
    """(site inputs, d(sum of per-example losses)/d(site outputs)), both keyed by site."""
    def total(p: Arrays) -> tuple[jax.Array, Arrays]:
        logits, inputs = forward_to_outputs(params, x, p, model)
        return loss_fn(logits, y, loss) * x.shape[0], inputs  # mean -> sum: per-example cotangents

    cots, inputs = jax.grad(total, has_aux=True)(zero_probes(params, x, model))
    return inputs, cots


def layer_grads(name: str, layer: nnx.Module, inputs: Arrays, cots: Arrays) -> Arrays:
    """{native leaf: (B, *shape)} of one layer, summed over its sites."""
    total: Arrays = {}
    for site in (s for s in inputs if site_layer(s) == name):
        for leaf, v in rules.per_example(layer, inputs[site], cots[site]).items():
            total[leaf] = v if leaf not in total else total[leaf] + v
    return total


def fill(params: Params, per_layer: dict[str, Arrays], model: str | Net = DEFAULT_MODEL) -> Params:
    """A State shaped like ``params`` with {layer: {native leaf: value}} filled in."""
    paths = {path_name(p): p for p, _ in param_modules(resolve(model).abstract_module)}
    flat = {(paths[name], leaf): v for name, leaves in per_layer.items() for leaf, v in leaves.items()}
    out = jax.tree.map(lambda v: v, params)  # a fresh State of the same structure to fill
    nnx.replace_by_pure_dict(out, nested(flat))
    return out


def _batch_grads(params: Params, x: jax.Array, y: jax.Array, loss: str, model: str | Net) -> Params:
    inputs, cots = output_cotangents(params, x, y, loss, model)
    return fill(params, {name: layer_grads(name, layer, inputs, cots)
                         for name, layer in layers(params, model).items()}, model)


def per_layer_grads(
    params: Params, x: jax.Array, y: jax.Array, *, loss: str, chunk_size: int | None = None,
    model: str | Net = DEFAULT_MODEL,
) -> Params:
    """Per-sample gradients: an ``nnx.State`` like ``params`` with a leading (B,) axis on every leaf.

    With ``chunk_size``, ``lax.map(batch_size=chunk_size)`` runs the rules on chunks of that many samples
    (it vmaps the one-example rules, which batches their convolutions and products back into one chunk pass).
    """
    if chunk_size is None:
        return _batch_grads(params, x, y, loss, model)

    def one(xy: tuple[jax.Array, jax.Array]) -> Params:
        return jax.tree.map(lambda v: v[0], _batch_grads(params, xy[0][None], xy[1][None], loss, model))

    return jax.lax.map(one, (x, y), batch_size=chunk_size)

