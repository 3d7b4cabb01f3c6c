"""Inside the per-layer engine, for experiments (mirrors ``jax_impl.probe``): each parameterised layer's kind,
call sites and norm route, its input and output cotangent, and its rules as callables to time.

The measurements under ``scripts/`` (the norm cost models, the sequence-length panel, the LSTM profile) reach a
side only through its interface (``contract.interface.EXPORTS``); these are the engine's own calls
(``per_layer.output_cotangents``, ``rules.per_example`` / ``norm_sq`` / ``fallback_per_example``), named once here.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch

from torch.func import functional_call

from contract.cost_model import KIND_ROUTES, ROUTES, forced_routes
from torch_impl import layers, per_layer, rules
from torch_impl.model import Net, loss_fn, resolve

Stages = dict[str, Callable[[], Any]]
# Kinds whose norm rule chooses between forms (``contract.cost_model``), and the ``forced_routes`` key that forces
# one (the projection's is linear's).
ROUTED_KINDS: dict[str, str] = {"linear": "linear", "projection": "linear", "conv": "conv", "lstm": "lstm",
                                "embedding": "embedding"}


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


def own_io(params: dict, x: torch.Tensor, y: torch.Tensor, loss: str, model: str | Net,
           layer: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(the layer module's own input, d(sum of per-example losses) / d(its own output)) at its first call: what the
    vmap fallback over the whole layer takes (for a layer applied through a projection child, its site's (a, g)
    are the child's)."""
    net = resolve(model)
    module = per_layer.param_layers(net.module)[layer]
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def hook(mod: torch.nn.Module, args: tuple, out: torch.Tensor) -> None:
        if not seen:
            if not out.requires_grad:  # nothing upstream needs grad: make the output where backward stops
                out.requires_grad_(True)
            seen.append((args[0].detach(), out))

    handle = module.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            logits = functional_call(net.module, params, (x,))
            (g,) = torch.autograd.grad(loss_fn(logits, y, loss) * x.shape[0], seen[0][1])
    finally:
        handle.remove()
    return seen[0][0], g


def layer_stages(params: dict, x: torch.Tensor, y: torch.Tensor, loss: str, model: str | Net,
                 layer: str) -> tuple[Stages, Callable[[Any], Any]]:
    """One layer's rules on its real input and output cotangent (its first call), each a callable to time:
      "grads: rule"        its kind's per-example gradients {leaf: (B, *shape)} (kind "other": the fallback's);
      "grads: fallback"    vmap over examples of the vjp of the whole layer, on its own input and output cotangent;
      "norm: fallback"     the (B,) squared norms of "grads: fallback", summed over the leaves;
      "norm: materialize"  the (B,) squared norms of "grads: rule", summed over the leaves;
      "norm: <route>"      its norm rule with the route forced to each form but materialising (kinds
                           ``ROUTED_KINDS``: "norm: gram"; the embedding's "norm: gram" and "norm: sort");
      "norm: rule"         its norm rule under the routes in force when called (where it answers).
    Plus how to wait for a result."""
    net = resolve(model)
    module = per_layer.param_layers(net.module)[layer]
    inputs, cots = per_layer.output_cotangents(params, x, y, loss, net)
    site = next(s for s in inputs if per_layer.site_layer(s) == layer)
    a, g, leaves = inputs[site], cots[site], per_layer.layer_params(params, layer, module)
    a_own, g_own = (a, g) if rules.site_module(module) is module else own_io(params, x, y, loss, net, layer)

    def no_grad(fn: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            with torch.no_grad():
                return fn()
        return run

    def norms(grads: Callable[[], dict[str, torch.Tensor]]) -> Callable[[], torch.Tensor]:
        return no_grad(lambda: sum(rules.sq(v) for v in grads().values()))

    def rule_grads() -> dict[str, torch.Tensor]:
        return rules.per_example(module, leaves, a, g)

    def fallback_grads() -> dict[str, torch.Tensor]:
        return rules.fallback_per_example(module, leaves, a_own, g_own)

    stages: Stages = {"grads: rule": no_grad(rule_grads), "grads: fallback": no_grad(fallback_grads),
                      "norm: fallback": norms(fallback_grads), "norm: materialize": norms(rule_grads)}
    kind = rules.kind_of(module)
    for route in (r for r in KIND_ROUTES.get(kind, ROUTES) if r != "materialize" and kind in ROUTED_KINDS):
        def forced(route: str = route) -> torch.Tensor | None:
            with forced_routes(**{ROUTED_KINDS[kind]: route}):
                return rules.norm_sq(module, a, g, leaves)
        if no_grad(forced)() is not None:
            stages[f"norm: {route}"] = no_grad(forced)
    if no_grad(lambda: rules.norm_sq(module, a, g, leaves))() is not None:
        stages["norm: rule"] = no_grad(lambda: rules.norm_sq(module, a, g, leaves))
    return stages, _sync


def _loop_autograd(pre: torch.Tensor, weight_hh: torch.Tensor) -> torch.Tensor:
    """The LSTM recurrence as a plain loop of torch ops, differentiated by autograd."""
    b, _, four_h = pre.shape
    h = pre.new_zeros(b, four_h // 4)
    c = pre.new_zeros(b, four_h // 4)
    out = []
    for pre_t in pre.unbind(1):
        i, f, g, o = torch.addmm(pre_t, h, weight_hh.t()).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        out.append(h)
    return torch.stack(out, dim=1)


@contextmanager
def autodiff_recurrence() -> Iterator[None]:
    """Within (at call time): the LSTM recurrence without its own backward, the loop differentiated by autograd
    (the formulation ``layers.recurrence``'s backward replaced; ``scripts/sgd_formulations.py`` times both)."""
    saved = layers.recurrence
    layers.recurrence = _loop_autograd
    try:
        yield
    finally:
        layers.recurrence = saved
