"""Per-sample gradients from per-layer-KIND rules (mirrors ``jax_impl.per_layer``).

One batched forward, one batched backward to the OUTPUTS of every layer that owns parameters, then each
layer's per-sample gradients from its input ``a`` and output cotangent ``g`` by the rule of its kind
(``torch_impl.rules``: linear, conv, embedding; anything else by the vmap fallback). The layers are found
from the model itself: forward hooks on every submodule with parameters of its own (``named_modules``)
record (a, z) per call (at a parameter-free ``Projection`` / ``GateInput`` child's call when the layer applies its
parameters through one: ``rules.site_module``; the LSTM's recorded input is completed by its hidden states when the
layer returns: ``rules.site_input``); nothing here names a model's layers.
The backward differentiates the SUM of per-example losses (= B x the mean loss), so each sample's cotangent
is exactly its own single-example loss gradient (the mean's 1/B undone).
A layer called more than once per forward (weight tying) has one "site" per call; its per-sample gradient
is the sum over its sites.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn as nn
from torch.func import functional_call

from contract.spec import DEFAULT_MODEL
from torch_impl import rules
from torch_impl.model import Net, loss_fn, resolve

Params = dict[str, torch.Tensor]


def param_layers(module: nn.Module) -> dict[str, nn.Module]:
    """{module path: submodule} for every submodule that owns parameters directly, in ``named_modules`` order."""
    return {name: m for name, m in module.named_modules() if next(m.parameters(recurse=False), None) is not None}


def site_layer(site: str) -> str:
    """The layer path of a site: "fc1" for "fc1" (first call) and for "fc1@1" (second call)."""
    return site.split("@")[0]


@contextmanager
def _recording(layers: dict[str, nn.Module], inputs: dict[str, torch.Tensor],
               outputs: dict[str, torch.Tensor]) -> Iterator[None]:
    """Forward hooks that record each call's input and make its output a differentiable graph node; for a layer
    whose kind completes its input from the layer's output (``rules.site_input``: the LSTM's hidden states), one
    more hook on the layer itself does that when its call returns."""
    def hook_for(name: str):
        def hook(mod: nn.Module, args: tuple, out: torch.Tensor) -> None:
            calls = sum(1 for s in outputs if site_layer(s) == name)
            site = name if calls == 0 else f"{name}@{calls}"
            if not out.requires_grad:  # nothing upstream needs grad: the output is a leaf, where backward stops
                out.requires_grad_(True)
            inputs[site], outputs[site] = args[0].detach(), out
        return hook

    def completion_for(name: str, complete):
        def hook(mod: nn.Module, args: tuple, out: torch.Tensor) -> None:
            site = [s for s in inputs if site_layer(s) == name][-1]  # this call's site, recorded inside it
            inputs[site] = complete(inputs[site], out.detach())
        return hook

    handles = [rules.site_module(m).register_forward_hook(hook_for(name)) for name, m in layers.items()]
    handles += [m.register_forward_hook(completion_for(name, rules.site_input(m)))
                for name, m in layers.items() if rules.site_input(m) is not None]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def layer_site(layer: nn.Module, a: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(the input, the output cotangent) the engine records at ``layer``'s site when the layer's own input is a and
    its output's cotangent g: (a, g) itself for most kinds; the LSTM's ([x; h_prev], d loss / d gates). One forward
    and backward of the layer alone, with its own parameters (the rule tests' view of a layer)."""
    inputs: dict[str, torch.Tensor] = {}
    outputs: dict[str, torch.Tensor] = {}
    with torch.enable_grad(), _recording({"": layer}, inputs, outputs):
        out = layer(a)
    return inputs[""], site_cotangents((out * g).sum(), outputs)[""]


def forward_to_outputs(
    params: Params, x: torch.Tensor, model: str | Net = DEFAULT_MODEL
) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The model's forward, keeping each parameterised layer's input and output per call ("site").

    x: the workload's batch -> (logits (B, classes), inputs {site: a}, outputs {site: z}); conv z are NCHW.
    """
    net = resolve(model)
    inputs: dict[str, torch.Tensor] = {}
    outputs: dict[str, torch.Tensor] = {}
    with _recording(param_layers(net.module), inputs, outputs):
        logits = functional_call(net.module, params, (x,))
    return logits, inputs, outputs


def site_cotangents(
    total: torch.Tensor, outputs: dict[str, torch.Tensor], keep_graph: bool = False
) -> dict[str, torch.Tensor]:
    """d total / d each site's output (zeros for an output the loss does not reach)."""
    cots = torch.autograd.grad(total, list(outputs.values()), retain_graph=keep_graph, allow_unused=True)
    return {s: torch.zeros_like(z) if c is None else c for (s, z), c in zip(outputs.items(), cots)}


def output_cotangents(
    params: Params, x: torch.Tensor, y: torch.Tensor, loss: str, model: str | Net = DEFAULT_MODEL
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(site inputs, d(sum of per-example losses)/d(site outputs)), both keyed by site."""
    with torch.enable_grad():
        logits, inputs, outputs = forward_to_outputs(params, x, model)
        cots = site_cotangents(loss_fn(logits, y, loss) * x.shape[0], outputs)  # mean -> sum: per-example
    return inputs, cots


def layer_params(params: Params, name: str, layer: nn.Module) -> Params:
    """{leaf: tensor} of one layer (with its children's, for the fallback's functional_call)."""
    prefix = f"{name}." if name else ""
    return {k: params[f"{prefix}{k}"] for k, _ in layer.named_parameters()}


def layer_grads(
    name: str, layer: nn.Module, params: Params, inputs: dict[str, torch.Tensor], cots: dict[str, torch.Tensor]
) -> Params:
    """{canonical name: (B, *shape)} of one layer, summed over its sites."""
    total: Params = {}
    for site in (s for s in inputs if site_layer(s) == name):
        for leaf, v in rules.per_example(layer, layer_params(params, name, layer), inputs[site], cots[site]).items():
            key = f"{name}.{leaf}" if name else leaf
            total[key] = v if key not in total else total[key] + v
    return total


def _batch_grads(params: Params, x: torch.Tensor, y: torch.Tensor, loss: str, net: Net) -> Params:
    inputs, cots = output_cotangents(params, x, y, loss, net)
    out: Params = {}
    for name, layer in param_layers(net.module).items():
        out.update(layer_grads(name, layer, params, inputs, cots))
    return {n: out[n] for n in params}


def per_layer_grads(
    params: Params, x: torch.Tensor, y: torch.Tensor, *, loss: str, chunk_size: int | None = None,
    model: str | Net = DEFAULT_MODEL,
) -> Params:
    """{name: (B, *shape)} per-sample gradients; with ``chunk_size``, at most that many samples per pass,
    each chunk's results copied into one preallocated (B, *shape) output."""
    net = resolve(model)
    if chunk_size is None or chunk_size >= x.shape[0]:
        return _batch_grads(params, x, y, loss, net)
    out = {n: torch.empty((x.shape[0], *p.shape), dtype=p.dtype, device=p.device) for n, p in params.items()}
    for lo in range(0, x.shape[0], chunk_size):
        sl = slice(lo, lo + chunk_size)
        for n, g in _batch_grads(params, x[sl], y[sl], loss, net).items():
            out[n][sl].copy_(g)
    return out

