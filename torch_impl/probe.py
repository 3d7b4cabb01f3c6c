"""Inside the per-layer engine, for experiments (mirrors ``jax_impl.probe``): each parameterised layer's kind,
call sites and norm route, its input and output cotangent, and its rules as callables to time.

The measurements under ``scripts/`` (the norm cost models, the sequence-length panel, the LSTM profile) reach a
side only through its interface (``contract.interface.EXPORTS``); these are the engine's own calls
(``per_layer.output_cotangents``, ``rules.per_example`` / ``norm_sq`` / ``fallback_per_example``), named once here.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from contract.cost_model import forced_routes
from torch_impl import per_layer, rules
from torch_impl.model import Net, resolve

Stages = dict[str, Callable[[], Any]]
# Kinds whose norm has a Gram form, and the ``forced_routes`` key that forces it (the projection's is linear's).
GRAM_KINDS: dict[str, str] = {"linear": "linear", "projection": "linear", "conv": "conv", "lstm": "lstm"}


def _sync(value: Any) -> Any:
    return value  # CPU ops are synchronous


def layer_cotangents(params: dict, x: torch.Tensor, y: torch.Tensor, loss: str,
                     model: str | Net) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """({site: the layer's input a}, {site: g = d(sum of per-example losses) / d(the layer's output)}), one
    batched forward and backward; a site is a layer's call ("fc1", "fc1@1" for a second call)."""
    return per_layer.output_cotangents(params, x, y, loss, model)


def layer_routes(params: dict, x: torch.Tensor, y: torch.Tensor, loss: str, model: str | Net) -> list[dict]:
    """Per parameterised layer, in the model's order: {"layer", "kind", "sites" (calls per forward), "a_shape",
    "g_shape" (its first call's, batch axis included), "norm_rule": whether its kind's norm rule answers on this
    (a, g) under the routes in force (False: the engine materialises the layer's per-example gradients)}."""
    inputs, cots = per_layer.output_cotangents(params, x, y, loss, model)
    out = []
    with torch.no_grad():
        for name, layer in per_layer.param_layers(resolve(model).module).items():
            sites = [s for s in inputs if per_layer.site_layer(s) == name]
            a, g = inputs[sites[0]], cots[sites[0]]
            leaves = per_layer.layer_params(params, name, layer)
            answers = len(sites) == 1 and rules.norm_sq(layer, a, g, leaves) is not None
            out.append({"layer": name, "kind": rules.kind_of(layer), "sites": len(sites), "a_shape": tuple(a.shape),
                        "g_shape": tuple(g.shape), "norm_rule": answers})
    return out


def layer_stages(params: dict, x: torch.Tensor, y: torch.Tensor, loss: str, model: str | Net,
                 layer: str) -> tuple[Stages, Callable[[Any], Any]]:
    """One layer's rules on its real input and output cotangent (its first call), each a callable to time:
      "grads: rule"        its kind's per-example gradients {leaf: (B, *shape)} (kind "other": the fallback's);
      "grads: fallback"    vmap over examples of the layer's own vjp (where the layer is its own call site);
      "norm: materialize"  the (B,) squared norms of "grads: rule", summed over the leaves;
      "norm: gram"         its norm rule with the route forced to the Gram form (kinds ``GRAM_KINDS``);
      "norm: rule"         its norm rule under the routes in force when called (where it answers).
    Plus how to wait for a result."""
    net = resolve(model)
    module = per_layer.param_layers(net.module)[layer]
    inputs, cots = per_layer.output_cotangents(params, x, y, loss, net)
    site = next(s for s in inputs if per_layer.site_layer(s) == layer)
    a, g, leaves = inputs[site], cots[site], per_layer.layer_params(params, layer, module)

    def no_grad(fn: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            with torch.no_grad():
                return fn()
        return run

    def materialized() -> torch.Tensor:
        return sum(rules.sq(v) for v in rules.per_example(module, leaves, a, g).values())

    stages: Stages = {"grads: rule": no_grad(lambda: rules.per_example(module, leaves, a, g))}
    if rules.site_module(module) is module:
        stages["grads: fallback"] = no_grad(lambda: rules.fallback_per_example(module, leaves, a, g))
    stages["norm: materialize"] = no_grad(materialized)
    key = GRAM_KINDS.get(rules.kind_of(module))
    if key is not None:
        def gram() -> torch.Tensor | None:
            with forced_routes(**{key: "gram"}):
                return rules.norm_sq(module, a, g, leaves)
        if no_grad(gram)() is not None:
            stages["norm: gram"] = no_grad(gram)
    if no_grad(lambda: rules.norm_sq(module, a, g, leaves))() is not None:
        stages["norm: rule"] = no_grad(lambda: rules.norm_sq(module, a, g, leaves))
    return stages, _sync
