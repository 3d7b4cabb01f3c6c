"""Inside the per-layer engine, for experiments (mirrors ``torch_impl.probe``): each parameterised layer's kind,
call sites and norm route, its input and output cotangent, and its rules as callables to time.

The measurements under ``scripts/`` (the norm cost models, the sequence-length panel, the LSTM profile) reach a
side only through its interface (``contract.interface.EXPORTS``); these are the engine's own calls
(``per_layer.output_cotangents``, ``rules.per_example`` / ``norm_sq`` / ``fallback_per_example``), named once here.
Every stage is jitted with its arrays as arguments (closed-over arrays would be constants XLA folds); a route
forced or not is read when a stage is traced, i.e. at its first call.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from contract.cost_model import forced_routes
from jax_impl import per_layer, rules
from jax_impl.model import Net, resolve

Stages = dict[str, Callable[[], Any]]
# Kinds whose norm has a Gram form, and the ``forced_routes`` key that forces it (the projection's is linear's).
GRAM_KINDS: dict[str, str] = {"linear": "linear", "projection": "linear", "conv": "conv", "lstm": "lstm"}


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


def layer_stages(params: Any, x: jax.Array, y: jax.Array, loss: str, model: str | Net,
                 layer: str) -> tuple[Stages, Callable[[Any], Any]]:
    """One layer's rules on its real input and output cotangent (its first call), each a callable to time:
      "grads: rule"        its kind's per-example gradients {leaf: (B, *shape)} (kind "other": the fallback's);
      "grads: fallback"    vmap over examples of the layer's own vjp (where the layer is its own call site);
      "norm: materialize"  the (B,) squared norms of "grads: rule", summed over the leaves;
      "norm: gram"         its norm rule with the route forced to the Gram form (kinds ``GRAM_KINDS``);
      "norm: rule"         its norm rule under the routes in force when first called (where it answers).
    Plus how to wait for a result."""
    net = resolve(model)
    inputs, cots = layer_cotangents(params, x, y, loss, net)
    site = next(s for s in inputs if per_layer.site_layer(s) == layer)
    a, g = inputs[site], cots[site]

    def mod(p: Any) -> Any:
        return per_layer.layers(p, net)[layer]

    module = mod(params)

    def gram(p: Any, a: jax.Array, g: jax.Array) -> jax.Array | None:
        with forced_routes(**{GRAM_KINDS[rules.kind_of(module)]: "gram"}):
            return rules.norm_sq(mod(p), a, g)

    fns: dict[str, Callable] = {
        "grads: rule": lambda p, a, g: rules.per_example(mod(p), a, g),
        "grads: fallback": lambda p, a, g: rules.fallback_per_example(mod(p), a, g),
        "norm: materialize": lambda p, a, g: sum(rules.sq(v) for v in rules.per_example(mod(p), a, g).values()),
        "norm: gram": gram,
        "norm: rule": lambda p, a, g: rules.norm_sq(mod(p), a, g),
    }
    if rules.site_child(module) is not None:
        del fns["grads: fallback"]
    if rules.kind_of(module) not in GRAM_KINDS or jax.eval_shape(gram, params, a, g) is None:
        del fns["norm: gram"]
    if jax.eval_shape(fns["norm: rule"], params, a, g) is None:
        del fns["norm: rule"]
    jitted = {name: jax.jit(fn) for name, fn in fns.items()}
    return {name: (lambda f=f: f(params, a, g)) for name, f in jitted.items()}, jax.block_until_ready
