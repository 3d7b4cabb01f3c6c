"""Named stages of one workload for ``compare.profile`` (mirrors ``torch_impl.profile``): each stage a callable to
time, plus how to wait for its result. Stages come from the workload's own layers; nothing here names one.
Everything is a jit argument: closed-over arrays would be constants that XLA folds at compile time.
``dtype="bfloat16"``: the parameters and inputs are cast by ``jax_impl.precision.to_compute`` once, before the
stages (the methods cast inside their jit), so every stage computes in bfloat16."""
from __future__ import annotations

from typing import Any, Callable

import jax
from flax import nnx

from jax_impl import per_layer, precision, rules
from jax_impl.model import Net, resolve
from jax_impl.per_sample import batch_loss
from jax_impl.weights import param_modules, path_name

Stages = dict[str, Callable[[], Any]]


def per_layer_stages(params: Any, x: Any, y: Any, loss: str, model: str | Net,
                     dtype: str = "float32") -> tuple[Stages, Callable]:
    """forward, forward+backward to the layer outputs, then one rule stage per layer call site."""
    params, x = precision.to_compute(params, dtype), precision.to_compute(x, dtype)
    layers = {path_name(p): m for p, m in param_modules(resolve(model).abstract_module)}  # structure only
    zeros = per_layer.zero_probes(params, x, model)
    fwd = jax.jit(lambda p, x, z: per_layer.forward_to_outputs(p, x, z, model))
    fwd_bwd = jax.jit(lambda p, x, y: per_layer.output_cotangents(p, x, y, loss, model))
    inputs, cots = fwd_bwd(params, x, y)
    stages: Stages = {"forward": lambda: fwd(params, x, zeros),
                      "forward+backward to outputs": lambda: fwd_bwd(params, x, y)}
    for site in inputs:
        jitted = jax.jit(lambda a, g, layer=layers[per_layer.site_layer(site)]: rules.per_example(layer, a, g))
        stages[f"rule {site}"] = lambda site=site, jitted=jitted: jitted(inputs[site], cots[site])
    return stages, jax.block_until_ready


def reference_stages(params: Any, x: Any, y: Any, loss: str, model: str | Net,
                     subsets: dict[str, tuple[str, ...]], dtype: str = "float32") -> tuple[Stages, Callable]:
    """The forward alone, then the batched gradient w.r.t. each subset of layers (the rest held constant)."""
    params, x = precision.to_compute(params, dtype), precision.to_compute(x, dtype)
    jitted_loss = jax.jit(lambda p, x, y: batch_loss(p, x, y, loss, model))
    pure = nnx.to_pure_dict(params)

    def subset_grad(layers: tuple[str, ...]) -> Callable[[], Any]:
        sub = {k: v for k, v in pure.items() if k in layers}
        rest = {k: v for k, v in pure.items() if k not in layers}

        def loss_of(sub: dict, rest: dict, x: Any, y: Any) -> Any:
            state = jax.tree.map(lambda v: v, params)
            nnx.replace_by_pure_dict(state, {**rest, **sub})
            return batch_loss(state, x, y, loss, model)

        g = jax.jit(jax.grad(loss_of))
        return lambda: g(sub, rest, x, y)

    stages: Stages = {"forward only": lambda: jitted_loss(params, x, y),
                      **{name: subset_grad(layers) for name, layers in subsets.items()}}
    return stages, jax.block_until_ready
