"""Per-example gradient norms and clipped sums WITHOUT per-example gradients (mirrors ``jax_impl.ghost``).

DP-SGD needs each example's gradient norm ||g_b|| and the clipped sum sum_b c_b g_b, c_b = min(1, clip/||g_b||),
not the (B x |params|) per-example tensor. Both come from one batched forward and one backward to the OUTPUTS
of every parameterised layer (``per_layer.forward_to_outputs``: layers found by hooks, no layer named here),
with each layer's input ``a`` and output cotangent ``g``, by the rules of the layer's KIND
(``torch_impl.rules``):

  norms   a kind's norm sampler where it has one and its cost model says so (linear: rank-one ||g|| ||a|| on
          one position, Gram or materialise on T positions; conv: Gram or materialise per layer by
          ``rules.gram_is_cheaper``, measured in ``rules/conv.py``; embedding: per distinct token row, never
          the dense (B x V x d) tensor); every other layer ("materialised": no kind, a kind's instance the
          rule does not cover, a layer called twice, or the cost model's choice) writes its per-example
          gradient CHUNK examples at a time and takes its norm;
and the clipped sum by one of two routes (``dp.CLIPPINGS``):
  "ghost"  a SECOND backward of sum_b m_b c_b loss_b with c held constant (Li et al. 2021; Opacus' fast
           gradient clipping): ordinary batched weight gradients of a reweighted loss;
  "bk"     book-keeping (Bu et al., ICML 2023): each layer's clipped sum straight from (a, c*g), no second
           backward (the kind's clipped-sum rule: linear (c g)^T a, conv one weight-gradient of c-scaled g,
           embedding an index_add into the rows); a materialised layer's sum is c^T (its per-example grads),
           chunk by chunk (see ``bk_clipped_sum``).

The backward differentiates sum_b m_b loss_b (mask m, 1 = real example), so every cotangent row is that
example's own single-example gradient, and a masked example's rows are exactly zero: zero norm, factor 1,
zero contribution. Every layer must be applied to each example separately (no batch norm); a layer on T
positions is fine (its rule sums over them).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from contract.spec import DEFAULT_MODEL
from torch_impl import rules
from torch_impl.model import Net, resolve
from torch_impl.per_layer import (forward_to_outputs, layer_grads, layer_params, param_layers, site_cotangents,
                                  site_layer)

Params = dict[str, torch.Tensor]
Arrays = dict[str, torch.Tensor]
# Examples per pass over the materialised layers: bounds the per-example grads alive at once (seed conv2:
# 19 MB at 256 instead of 604 MB at B=8192, where that was the whole of bk's peak above SGD's).
CHUNK = 256


def example_losses(logits: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """(B,) each example's own loss (= ``model.loss_fn`` of a batch of one); logits (B, classes), y (B,) int64."""
    if loss == "seed":
        return -logits.gather(1, y.unsqueeze(1)).squeeze(1)
    return -F.log_softmax(logits, dim=1).gather(1, y.unsqueeze(1)).squeeze(1)


def factors_from_norms(norms: torch.Tensor, clip: float) -> torch.Tensor:
    """(B,) ``min(clip / n, 1)``, NaN -> 1: ``dp.clip_factors``' formula (n = 0 gives inf -> 1)."""
    return torch.nan_to_num(torch.clamp(clip / norms, max=1.0), nan=1.0)


def _cotangents(
    params: Params, x: torch.Tensor, y: torch.Tensor, loss: str, mask: torch.Tensor | None, keep_graph: bool,
    net: Net,
) -> tuple[Arrays, Arrays, torch.Tensor]:
    """(site inputs, d(sum_b m_b loss_b)/d(site outputs), per-example losses (B,) with the graph when kept)."""
    logits, inputs, outputs = forward_to_outputs(params, x, net)
    losses = example_losses(logits, y, loss)
    total = (losses if mask is None else losses * mask).sum()
    return inputs, site_cotangents(total, outputs, keep_graph), losses


def _sq(v: torch.Tensor) -> torch.Tensor:
    return rules.sq(v)


def _own(params: Params | None, name: str, layer: torch.nn.Module) -> Params | None:
    """The layer's {leaf: tensor} for its kind's rules (None where no parameters were given)."""
    return None if not params else layer_params(params, name, layer)


def _split(net: Net, inputs: Arrays, cots: Arrays, params: Params | None) -> tuple[Arrays, list[str]]:
    """({layer: (B,) squared norm} of the layers with a cheap norm rule, [the layers to materialise])."""
    cheap, materialised = {}, []
    for name, layer in param_layers(net.module).items():
        sites = [s for s in inputs if site_layer(s) == name]
        norm = rules.norm_sq(layer, inputs[sites[0]], cots[sites[0]], _own(params, name, layer)) \
            if len(sites) == 1 else None
        if norm is None:
            materialised.append(name)
        else:
            cheap[name] = norm
    return cheap, materialised


def _chunks(batch: int) -> list[slice]:
    return [slice(lo, lo + CHUNK) for lo in range(0, batch, CHUNK)]


def _materialise(net: Net, params: Params, names: list[str], inputs: Arrays, cots: Arrays, s: slice) -> dict[str, Params]:
    """{layer: {canonical name: (b, *shape)}} of the materialised layers on the examples ``s``."""
    layers = param_layers(net.module)
    sub_in, sub_cot = {k: v[s] for k, v in inputs.items()}, {k: v[s] for k, v in cots.items()}
    return {name: layer_grads(name, layers[name], params, sub_in, sub_cot) for name in names}


def layer_norms_sq(
    inputs: Arrays, cotangents: Arrays, model: str | Net = DEFAULT_MODEL, params: Params | None = None
) -> Arrays:
    """{layer: (B,)} squared per-example norm of each layer's gradient, from site inputs ``a`` and output
    cotangents ``g`` (as ``per_layer.output_cotangents`` returns them). ``params`` is needed only by layers
    the vmap fallback materialises and by kinds whose rules read parameter values (the LSTM)."""
    net = resolve(model)
    cheap, names = _split(net, inputs, cotangents, params)
    batch = next(iter(cotangents.values())).shape[0]
    out = dict(cheap)
    for name in names:
        parts = [sum(_sq(g) for g in _materialise(net, params or {}, [name], inputs, cotangents, s)[name].values())
                 for s in _chunks(batch)]
        out[name] = torch.cat(parts)
    return {name: out[name] for name in param_layers(net.module)}


def _global_norms(sq: Arrays) -> torch.Tensor:
    return torch.stack(list(sq.values())).sum(0).sqrt()


def ghost_norms(
    params: Params, x: torch.Tensor, y: torch.Tensor, *, loss: str, model: str | Net = DEFAULT_MODEL
) -> torch.Tensor:
    """(B,) each example's global gradient L2 norm; no per-example gradient of a cheap-rule layer written."""
    net = resolve(model)
    with torch.enable_grad():
        inputs, cots, _ = _cotangents(params, x, y, loss, None, False, net)
    return _global_norms(layer_norms_sq(inputs, cots, net, params))


def _mask_sum(losses: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return (losses if mask is None else losses * mask).sum().detach()


def ghost_clipped_sum(
    params: Params, x: torch.Tensor, y: torch.Tensor, *, clip: float, loss: str, mask: torch.Tensor | None = None,
    model: str | Net = DEFAULT_MODEL,
) -> tuple[Params, torch.Tensor]:
    """(sum_b m_b c_b g_b {name: shape}, sum_b m_b loss_b): ghost norms, then a second backward of
    sum_b m_b c_b loss_b through the SAME forward graph (c detached)."""
    net = resolve(model)
    names = list(params)
    leaves = [params[n].detach().requires_grad_(True) for n in names]
    live = dict(zip(names, leaves))
    with torch.enable_grad():
        inputs, cots, losses = _cotangents(live, x, y, loss, mask, True, net)
        factors = factors_from_norms(_global_norms(layer_norms_sq(inputs, cots, net, params)), clip)
        del inputs, cots
        weights = factors if mask is None else factors * mask
        grads = torch.autograd.grad((losses * weights).sum(), leaves)
    return dict(zip(names, grads)), _mask_sum(losses, mask)


def bk_clipped_sum(
    params: Params, x: torch.Tensor, y: torch.Tensor, *, clip: float, loss: str, mask: torch.Tensor | None = None,
    model: str | Net = DEFAULT_MODEL,
) -> tuple[Params, torch.Tensor]:
    """(sum_b m_b c_b g_b {name: shape}, sum_b m_b loss_b) by book-keeping: one forward, one backward to the
    layer outputs, the norms, then each layer's clipped sum from (a, c*g) directly.

    Materialised layers go CHUNK examples at a time: each chunk's per-example grads give its norms (with the
    cheap layers' norms), hence its factors, and are then summed with them by a tensordot (b x |W|
    multiply-adds: seed conv2 18432 per example, far below another weight-gradient's b x P x |W|)."""
    net = resolve(model)
    with torch.enable_grad():
        inputs, cots, losses = _cotangents(params, x, y, loss, mask, False, net)
    loss_sum = _mask_sum(losses, mask)
    del losses  # its graph's saved activations are already freed by the backward; drop the nodes too
    with rules.bookkeeping():  # a materialised layer's sum is a tensordot here: the norm forms are chosen for bk
        cheap, names = _split(net, inputs, cots, params)
    batch = x.shape[0]
    cheap_sq = sum(cheap.values()) if cheap else torch.zeros(batch, dtype=params[next(iter(params))].dtype,
                                                             device=x.device)
    weights = torch.empty_like(cheap_sq)
    sums: Params = {}
    for s in _chunks(batch) if names else [slice(0, batch)]:
        grads = _materialise(net, params, names, inputs, cots, s)
        sq = cheap_sq[s] + sum((_sq(g) for per in grads.values() for g in per.values()), torch.zeros_like(cheap_sq[s]))
        w = factors_from_norms(sq.sqrt(), clip)
        weights[s] = w if mask is None else w * mask[s]
        for per in grads.values():
            for key, g in per.items():
                v = torch.tensordot(weights[s], g, dims=1)
                sums[key] = v if key not in sums else sums[key].add_(v)
        del grads  # free this chunk's per-example grads before the next chunk writes its own
    layers = param_layers(net.module)
    for name in cheap:
        site = next(s for s in inputs if site_layer(s) == name)
        own = _own(params, name, layers[name])
        for leaf, v in rules.clipped_sum(layers[name], inputs[site], cots[site], weights, own).items():
            sums[f"{name}.{leaf}" if name else leaf] = v
    return {name: sums[name] for name in params}, loss_sum
