"""Inside the per-layer engine, for experiments (mirrors ``torch_impl.probe``): each parameterised layer's kind,
call sites and norm route, its input and output cotangent, and its rules as callables to time.

The measurements under ``scripts/`` (the norm cost models, the sequence-length panel, the LSTM profile) reach a
side only through its interface (``contract.interface.EXPORTS``); these are the engine's own calls
(``per_layer.output_cotangents``, ``rules.per_example`` / ``norm_sq`` / ``fallback_per_example``), named once here.
Every stage is jitted with its arrays as arguments (closed-over arrays would be constants XLA folds); a route
forced or not is read when a stage is traced, i.e. at its first call.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp

from flax import nnx

from contract.cost_model import KIND_ROUTES, ROUTES, forced_routes
from jax_impl import layers, per_layer, rules
from jax_impl.model import Net, loss_fn, resolve
from jax_impl.weights import param_modules, path_name, replace_module

Stages = dict[str, Callable[[], Any]]
# Kinds whose norm rule chooses between forms (``contract.cost_model``), and the ``forced_routes`` key that forces
# one (the projection's is linear's).
ROUTED_KINDS: dict[str, str] = {"linear": "linear", "projection": "linear", "conv": "conv", "lstm": "lstm",
                                "embedding": "embedding"}


def layer_cotangents(params: Any, x: jax.Array, y: jax.Array, loss: str,
                     model: str | Net) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
    """({site: the layer's input a}, {site: g = d(sum of per-example losses) / d(the layer's output)}), one
    batched forward and backward (jitted); a site is a layer's call ("fc1", "fc1@1" for a second call)."""
    net = resolve(model)
    return jax.jit(lambda p, x, y: per_layer.output_cotangents(p, x, y, loss, net))(params, x, y)


def layer_routes(params: Any, x: jax.Array, y: jax.Array, loss: str, model: str | Net) -> list[dict]:
    """Per parameterised layer, in the model's order: {"layer", "kind", "sites" (calls per forward), "a_shape",
    "g_shape" (its first call's, batch axis included), "norm_rule": whether its kind's norm rule answers on this
    (a, g) under the routes in force (False: the engine materialises the layer's per-example gradients)}.
    Traced only (``jax.eval_shape``): the rules' answers are Python-level, nothing is computed."""
    net, out = resolve(model), []

    def trace(params: Any, x: jax.Array, y: jax.Array) -> jax.Array:
        inputs, cots = per_layer.output_cotangents(params, x, y, loss, net)
        for name, layer in per_layer.layers(params, net).items():
            sites = [s for s in inputs if per_layer.site_layer(s) == name]
            a, g = inputs[sites[0]], cots[sites[0]]
            answers = len(sites) == 1 and rules.norm_sq(layer, a, g) is not None
            out.append({"layer": name, "kind": rules.kind_of(layer), "sites": len(sites), "a_shape": tuple(a.shape),
                        "g_shape": tuple(g.shape), "norm_rule": answers})
        return jnp.zeros(())

    jax.eval_shape(trace, params, x, y)
    return out


def _probed(root: nnx.Module, layer: str, tape: Any) -> nnx.Module:
    """``root`` with the module at path ``layer`` (itself, not a projection child) wrapped to record its calls."""
    path, module = {path_name(p): (p, m) for p, m in param_modules(root)}[layer]
    return replace_module(root, path, per_layer._Probe(module, layer, tape))


def own_io(params: Any, x: jax.Array, y: jax.Array, loss: str, model: str | Net,
           layer: str) -> tuple[jax.Array, jax.Array]:
    """(the layer module's own input, d(sum of per-example losses) / d(its own output)) at its first call: what the
    vmap fallback over the whole layer takes (for a layer applied through a projection child, its site's (a, g)
    are the child's). Jitted."""
    net = resolve(model)

    def forward(probes: dict | None) -> tuple[jax.Array, Any]:
        tape = per_layer._Tape(probes)
        logits = _probed(nnx.merge(net.graphdef, params), layer, tape)(x)
        return loss_fn(logits, y, loss) * x.shape[0], tape

    shapes: dict = {}
    jax.eval_shape(lambda: shapes.update(forward(None)[1].shapes) or jnp.zeros(()))

    def run(params: Any, x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
        def total(probes: dict) -> tuple[jax.Array, jax.Array]:
            value, tape = forward(probes)
            return value, tape.inputs[layer]

        cots, a = jax.grad(total, has_aux=True)({s: jnp.zeros(v.shape, v.dtype) for s, v in shapes.items()})
        return a, cots[layer]

    return jax.jit(run)(params, x, y)


def layer_stages(params: Any, x: jax.Array, y: jax.Array, loss: str, model: str | Net,
                 layer: str) -> tuple[Stages, Callable[[Any], Any]]:
    """One layer's rules on its real input and output cotangent (its first call), each a callable to time:
      "grads: rule"        its kind's per-example gradients {leaf: (B, *shape)} (kind "other": the fallback's);
      "grads: fallback"    vmap over examples of the vjp of the whole layer, on its own input and output cotangent;
      "norm: fallback"     the (B,) squared norms of "grads: fallback", summed over the leaves;
      "norm: materialize"  the (B,) squared norms of "grads: rule", summed over the leaves;
      "norm: <route>"      its norm rule with the route forced to each form but materialising (kinds
                           ``ROUTED_KINDS``: "norm: gram"; the embedding's "norm: gram" and "norm: sort");
      "norm: rule"         its norm rule under the routes in force when first called (where it answers).
    Plus how to wait for a result."""
    net = resolve(model)
    inputs, cots = layer_cotangents(params, x, y, loss, net)
    site = next(s for s in inputs if per_layer.site_layer(s) == layer)

    def mod(p: Any) -> Any:
        return per_layer.layers(p, net)[layer]

    module = mod(params)
    kind = rules.kind_of(module)
    own = (inputs[site], cots[site]) if rules.site_child(module) is None else own_io(params, x, y, loss, net, layer)

    def forced(route: str) -> Callable[[Any, jax.Array, jax.Array], jax.Array | None]:
        def norm(p: Any, a: jax.Array, g: jax.Array) -> jax.Array | None:
            with forced_routes(**{ROUTED_KINDS[kind]: route}):
                return rules.norm_sq(mod(p), a, g)
        return norm

    def norms(grads: dict[str, jax.Array]) -> jax.Array:
        return sum(rules.sq(v) for v in grads.values())

    site_fns: dict[str, Callable] = {
        "grads: rule": lambda p, a, g: rules.per_example(mod(p), a, g),
        "norm: materialize": lambda p, a, g: norms(rules.per_example(mod(p), a, g)),
        **{f"norm: {r}": forced(r) for r in KIND_ROUTES.get(kind, ROUTES) if r != "materialize"
           and kind in ROUTED_KINDS},
        "norm: rule": lambda p, a, g: rules.norm_sq(mod(p), a, g),
    }
    site_fns = {name: fn for name, fn in site_fns.items() if not name.startswith("norm: ") or name ==
                "norm: materialize" or jax.eval_shape(fn, params, inputs[site], cots[site]) is not None}
    own_fns: dict[str, Callable] = {
        "grads: fallback": lambda p, a, g: rules.fallback_per_example(mod(p), a, g),
        "norm: fallback": lambda p, a, g: norms(rules.fallback_per_example(mod(p), a, g)),
    }
    stages = {name: (lambda f=jax.jit(fn): f(params, inputs[site], cots[site])) for name, fn in site_fns.items()}
    stages |= {name: (lambda f=jax.jit(fn): f(params, *own)) for name, fn in own_fns.items()}
    order = ("grads: rule", "grads: fallback", "norm: fallback", "norm: materialize")
    return {k: stages[k] for k in (*order, *(k for k in stages if k not in order))}, jax.block_until_ready


def _scan_autodiff(pre: jax.Array, kernel_hh: jax.Array) -> jax.Array:
    return jnp.swapaxes(layers._scan(pre, kernel_hh)[0], 0, 1)


@contextmanager
def autodiff_recurrence() -> Iterator[None]:
    """Within (at trace time): the LSTM recurrence without its own backward, its ``lax.scan`` differentiated by
    ``jax.grad`` (the formulation ``layers.recurrence``'s backward replaced; ``scripts/sgd_formulations.py``)."""
    saved = layers.recurrence
    layers.recurrence = _scan_autodiff
    try:
        yield
    finally:
        layers.recurrence = saved
