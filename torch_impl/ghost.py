"""Per-example gradient norms and clipped sums WITHOUT per-example gradients (mirrors ``jax_impl.ghost``).

DP-SGD needs each example's gradient norm ||g_b|| and the clipped sum sum_b c_b g_b, c_b = min(1, clip/||g_b||),
not the (B x 1.2M) per-example tensor. Both come from one batched forward and one backward to the layer
OUTPUTS (``per_layer.forward_to_outputs``), with each layer's input ``a`` and output cotangent ``g``:

  linear  ||dW_b||^2 + ||db_b||^2 = ||g_b||^2 (||a_b||^2 + 1)   (dW_b = g_b a_b^T is rank one: Goodfellow 2015;
          exact because each linear layer is applied once per example)
  conv    per layer, the rule in ``CONV_NORM_RULES`` (measured, see below)

and the clipped sum by one of two routes (``dp.CLIPPINGS``):
  "ghost"  a SECOND backward of sum_b m_b c_b loss_b with c held constant (Li et al. 2021; Opacus' fast
           gradient clipping): ordinary batched weight gradients of a reweighted loss;
  "bk"     book-keeping (Bu et al., ICML 2023): each layer's clipped sum straight from (a, c*g), no second
           backward: linear W = (c g)^T a (one matmul), bias = c^T g; conv: c^T (per-example grads) since the
           norm rule already wrote them, chunk by chunk (see ``_bk_conv_sums``).

The backward differentiates sum_b m_b loss_b (mask m, 1 = real example), so every cotangent row is that
example's own single-example gradient, and a masked example's rows are exactly zero: zero norm, factor 1,
zero contribution.

Conv norm rules, measured (float32, 1 thread, CPU time of the norm alone, min of 7, ms at B=64 / 256; this
2-core CPU shared with other jobs; command in the issue-9 report):
  "materialize": the layer's per-example weight gradient by ONE grouped conv weight-gradient (per_layer's rule;
      conv1 288, conv2 18432 values per example), then its norm:   conv1 1.7 / 9.5,   conv2 18.7 / 69;
  "gram": sum_{p,q} <a_p, a_q><g_p, g_q> over output positions p, q (F.unfold + two (P x P) Gram matrices,
      P = 676 / 576 positions; P^2 (d + C_out) vs P d C_out multiply-adds per example):
                                                                   conv1 88 / 360,   conv2 172 / 770.
  (For scale: one ordinary batched weight-gradient, what SGD pays: conv1 1.0 / 7.0, conv2 13.5 / 54.)
  "materialize" wins both layers by 10-50x, so ``CONV_NORM_RULES`` picks it; "gram" stays for reference/tests.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from torch_impl.per_layer import KERNEL, RULES, forward_to_outputs

Params = dict[str, torch.Tensor]
LAYERS: tuple[str, ...] = ("conv1", "conv2", "fc1", "fc2")
CONV_LAYERS: tuple[str, ...] = ("conv1", "conv2")
LINEAR_LAYERS: tuple[str, ...] = ("fc1", "fc2")

# (layer, rule) -> (ms at B=64, ms at B=256), from the measurement in the module docstring.
MEASURED_CONV_MS: dict[tuple[str, str], tuple[float, float]] = {
    ("conv1", "materialize"): (1.7, 9.5), ("conv1", "gram"): (88.0, 360.0),
    ("conv2", "materialize"): (18.7, 69.0), ("conv2", "gram"): (172.0, 770.0),
}
CONV_NORM_RULES: dict[str, str] = {"conv1": "materialize", "conv2": "materialize"}
# Examples per grouped conv weight-gradient: bounds the per-example conv grads alive at once (conv2: 19 MB at
# 256 instead of 604 MB at B=8192, where that was the whole of bk's peak above SGD's).
CONV_CHUNK = 256


def example_losses(logits: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """(B,) each example's own loss (= ``model.loss_fn`` of a batch of one); logits (B, 10), y (B,) int64."""
    if loss == "seed":
        return -logits.gather(1, y.unsqueeze(1)).squeeze(1)
    return -F.log_softmax(logits, dim=1).gather(1, y.unsqueeze(1)).squeeze(1)


def factors_from_norms(norms: torch.Tensor, clip: float) -> torch.Tensor:
    """(B,) ``min(clip / n, 1)``, NaN -> 1: ``dp.clip_factors``' formula (n = 0 gives inf -> 1)."""
    return torch.nan_to_num(torch.clamp(clip / norms, max=1.0), nan=1.0)


def _cotangents(
    params: Params, x: torch.Tensor, y: torch.Tensor, loss: str, mask: torch.Tensor | None, keep_graph: bool
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
    """(layer inputs, d(sum_b m_b loss_b)/d(layer outputs), per-example losses (B,) with the graph when kept)."""
    logits, inputs, outputs = forward_to_outputs(params, x)
    losses = example_losses(logits, y, loss)
    total = (losses if mask is None else losses * mask).sum()
    cots = torch.autograd.grad(total, list(outputs.values()), retain_graph=keep_graph)
    return {k: v.detach() for k, v in inputs.items()}, dict(zip(outputs, cots)), losses


def _sq(v: torch.Tensor) -> torch.Tensor:
    """(B,) squared L2 norm of each row of v (any trailing shape), without writing v.square()."""
    return torch.linalg.vector_norm(v.reshape(v.shape[0], -1), dim=1).square()


def _gram_conv_sq(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """(B,) ||dW_b||^2 = sum_{p,q} <a_p, a_q> <g_p, g_q> (a unfolded to (B, C_in k k, P), g (B, C_out, P))."""
    cols = F.unfold(a, KERNEL)
    gg = g.flatten(2)
    return (torch.bmm(cols.transpose(1, 2), cols) * torch.bmm(gg.transpose(1, 2), gg)).sum(dim=(1, 2))


def _linear_sq(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return _sq(g) * (_sq(a) + 1.0)


def _conv_terms(layer: str, a: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """(per-example weight grads (b, *W shape) where the "materialize" rule wrote them else None, per-example
    bias grads (b, C_out), squared weight+bias norms (b,)) of one conv layer on a chunk of b examples."""
    if CONV_NORM_RULES[layer] == "gram":
        bias = g.sum(dim=(2, 3))
        return None, bias, _gram_conv_sq(a, g) + _sq(bias)
    weight, bias = RULES[layer](a, g)  # per_layer's grouped-conv weight-gradient rule
    return weight, bias, _sq(weight) + _sq(bias)


def _chunks(batch: int) -> list[slice]:
    return [slice(lo, lo + CONV_CHUNK) for lo in range(0, batch, CONV_CHUNK)]


def layer_norms_sq(inputs: dict[str, torch.Tensor], cotangents: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """{layer: (B,)} squared per-example norm of each layer's weight+bias gradient, from layer inputs ``a``
    and output cotangents ``g`` (as ``per_layer.output_cotangents`` returns them)."""
    out = {}
    for layer in LAYERS:
        a, g = inputs[layer], cotangents[layer]
        if layer in CONV_LAYERS:
            out[layer] = torch.cat([_conv_terms(layer, a[s], g[s])[2] for s in _chunks(a.shape[0])])
        else:
            out[layer] = _linear_sq(a, g)
    return out


def _global_norms(sq: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.stack(list(sq.values())).sum(0).sqrt()


def ghost_norms(params: Params, x: torch.Tensor, y: torch.Tensor, *, loss: str) -> torch.Tensor:
    """(B,) each example's global gradient L2 norm, no per-example gradient of fc1 ever written."""
    with torch.enable_grad():
        inputs, cots, _ = _cotangents(params, x, y, loss, None, keep_graph=False)
    return _global_norms(layer_norms_sq(inputs, cots))


def _mask_sum(losses: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return (losses if mask is None else losses * mask).sum().detach()


def ghost_clipped_sum(
    params: Params, x: torch.Tensor, y: torch.Tensor, *, clip: float, loss: str, mask: torch.Tensor | None = None
) -> tuple[Params, torch.Tensor]:
    """(sum_b m_b c_b g_b {name: shape}, sum_b m_b loss_b): ghost norms, then a second backward of
    sum_b m_b c_b loss_b through the SAME forward graph (c detached)."""
    names = list(params)
    leaves = [params[n].detach().requires_grad_(True) for n in names]
    with torch.enable_grad():
        inputs, cots, losses = _cotangents(dict(zip(names, leaves)), x, y, loss, mask, keep_graph=True)
        factors = factors_from_norms(_global_norms(layer_norms_sq(inputs, cots)), clip)
        del inputs, cots
        weights = factors if mask is None else factors * mask
        grads = torch.autograd.grad((losses * weights).sum(), leaves)
    return dict(zip(names, grads)), _mask_sum(losses, mask)


def _bk_conv_sums(
    inputs: dict[str, torch.Tensor], cots: dict[str, torch.Tensor], linear_sq: torch.Tensor, clip: float,
    mask: torch.Tensor | None,
) -> tuple[torch.Tensor, Params]:
    """(weights m_b c_b (B,), clipped conv sums {name: shape}), CONV_CHUNK examples at a time: each chunk's
    per-example conv grads give its norms (with the linear layers' ``linear_sq``), hence its factors, and are
    then summed with them. A tensordot over the chunk costs b x |W| (conv2: 18432) multiply-adds, far below
    another conv weight-gradient (b x P x |W|, P = 576 positions); with the "gram" rule (no per-example grads
    written) the chunk's sum is one ordinary weight-gradient of c-scaled cotangents instead."""
    weights = torch.empty_like(linear_sq)
    sums: Params = {}
    for s in _chunks(linear_sq.shape[0]):
        terms = {layer: _conv_terms(layer, inputs[layer][s], cots[layer][s]) for layer in CONV_LAYERS}
        sq = linear_sq[s] + sum(t[2] for t in terms.values())
        w = factors_from_norms(sq.sqrt(), clip)
        weights[s] = w if mask is None else w * mask[s]
        for layer, (weight_grads, bias_grads, _) in terms.items():
            if weight_grads is None:
                a, g = inputs[layer][s], cots[layer][s] * weights[s].view(-1, 1, 1, 1)
                w_sum = torch.nn.grad.conv2d_weight(a, (g.shape[1], a.shape[1], KERNEL, KERNEL), g)
            else:
                w_sum = torch.tensordot(weights[s], weight_grads, dims=1)
            b_sum = weights[s] @ bias_grads
            for name, v in ((f"{layer}.weight", w_sum), (f"{layer}.bias", b_sum)):
                sums[name] = v if name not in sums else sums[name].add_(v)
        del terms  # free this chunk's per-example grads before the next chunk writes its own
    return weights, sums


def bk_clipped_sum(
    params: Params, x: torch.Tensor, y: torch.Tensor, *, clip: float, loss: str, mask: torch.Tensor | None = None
) -> tuple[Params, torch.Tensor]:
    """(sum_b m_b c_b g_b {name: shape}, sum_b m_b loss_b) by book-keeping: one forward, one backward to the
    layer outputs, the norms, then each layer's clipped sum from (a, c*g) directly."""
    with torch.enable_grad():
        inputs, cots, losses = _cotangents(params, x, y, loss, mask, keep_graph=False)
    loss_sum = _mask_sum(losses, mask)
    del losses  # its graph's saved activations are already freed by the backward; drop the nodes too
    linear_sq = sum(_linear_sq(inputs[layer], cots[layer]) for layer in LINEAR_LAYERS)
    weights, out = _bk_conv_sums(inputs, cots, linear_sq, clip, mask)
    for layer in LAYERS:
        if layer not in CONV_LAYERS:
            scaled = cots[layer] * weights.unsqueeze(1)
            out[f"{layer}.weight"], out[f"{layer}.bias"] = scaled.T @ inputs[layer], scaled.sum(0)
    return {name: out[name] for name in params}, loss_sum
