"""Named stages of one workload for ``compare.profile`` (mirrors ``jax_impl.profile``): each stage a callable to
time, plus how to wait for its result. Stages come from the workload's own layers; nothing here names one.
``dtype="bfloat16"``: every stage runs under ``torch_impl.precision.compute`` (autocast), as the methods do."""
from __future__ import annotations

from typing import Any, Callable

from torch.func import grad

from torch_impl import per_layer, precision, rules
from torch_impl.model import Net, resolve
from torch_impl.per_sample import batch_loss

Stages = dict[str, Callable[[], Any]]


def _sync(value: Any) -> Any:
    return value  # CPU ops are synchronous


def _in(dtype: str, device_type: str, stages: Stages) -> Stages:
    """Each stage run in ``dtype``'s compute precision (unchanged for float32 / float64)."""
    def run(fn: Callable[[], Any]) -> Callable[[], Any]:
        def call() -> Any:
            with precision.compute(dtype, device_type):
                return fn()
        return call
    return {name: run(fn) for name, fn in stages.items()}


def per_layer_stages(params: dict, x: Any, y: Any, loss: str, model: str | Net,
                     dtype: str = "float32") -> tuple[Stages, Callable]:
    """forward, forward+backward to the layer outputs, then one rule stage per layer call site."""
    layers = per_layer.param_layers(resolve(model).module)
    with precision.compute(dtype, x.device.type):
        inputs, cots = per_layer.output_cotangents(params, x, y, loss, model)
    stages: Stages = {"forward": lambda: per_layer.forward_to_outputs(params, x, model),
                      "forward+backward to outputs": lambda: per_layer.output_cotangents(params, x, y, loss, model)}
    for site in inputs:
        name = per_layer.site_layer(site)
        leaves = per_layer.layer_params(params, name, layers[name])
        stages[f"rule {site}"] = (lambda site=site, layer=layers[name], leaves=leaves:
                                  rules.per_example(layer, leaves, inputs[site], cots[site]))
    return _in(dtype, x.device.type, stages), _sync


def reference_stages(params: dict, x: Any, y: Any, loss: str, model: str | Net,
                     subsets: dict[str, tuple[str, ...]], dtype: str = "float32") -> tuple[Stages, Callable]:
    """The forward alone, then the batched gradient w.r.t. each subset of layers (the rest held constant)."""
    import torch

    def forward() -> Any:
        with torch.no_grad():
            return batch_loss(params, x, y, loss, model)

    def subset_grad(layers: tuple[str, ...]) -> Callable[[], Any]:
        sub = {k: v for k, v in params.items() if k.split(".")[0] in layers}
        rest = {k: v for k, v in params.items() if k not in sub}
        g = grad(lambda sub: batch_loss({**rest, **sub}, x, y, loss, model))
        return lambda: g(sub)

    stages = {"forward only": forward, **{name: subset_grad(layers) for name, layers in subsets.items()}}
    return _in(dtype, x.device.type, stages), _sync
