"""Per-sample gradients from explicit per-layer rules (mirrors ``jax_impl.per_layer``).

One batched forward, one batched backward to the layer OUTPUTS (pre-activations ``z``), then each layer's
per-sample weight gradient from its input ``a`` and output cotangent ``g`` (Goodfellow 2015, "Efficient
per-example gradient computations"; Opacus' hooks mode uses the same rules):
  linear  dW_b = g_b a_b^T   (a batched outer product),  db_b = g_b;
  conv    dW_b = G_b U_b^T   with U_b = im2col(a_b) (``F.unfold``), G_b = g_b as (C_out, H*W);  db_b = sum_hw g_b.
The backward differentiates the SUM of per-example losses (= B x the mean loss), so each sample's cotangent
is exactly its own single-example loss gradient (the mean's 1/B undone).
Results are written with ``out=`` straight into the (B, *shape) output tensors: no stacking copy, and
chunking (``chunk_size``) fills slices of the same output.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from compare.spec import PARAM_SHAPES
from torch_impl.model import loss_fn

Params = dict[str, torch.Tensor]
KERNEL = 3  # both convolutions: 3x3, stride 1, no padding (torch_impl.model.SimpleCNN)


def forward_to_outputs(
    params: Params, x: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """SimpleCNN's forward, keeping each layer's input and output.

    x: (B, 1, 28, 28) NCHW -> (logits (B, 10), inputs {layer: a}, outputs {layer: z}); z of conv layers is NCHW.
    conv1's output is made a graph leaf, so the backward stops there and computes no parameter gradients.
    """
    z1 = F.conv2d(x, params["conv1.weight"], params["conv1.bias"]).requires_grad_(True)
    a1 = F.relu(z1)
    z2 = F.conv2d(a1, params["conv2.weight"], params["conv2.bias"])
    f = torch.flatten(F.max_pool2d(F.relu(z2), 2), 1)  # (C, H, W) order, as the model flattens
    z3 = F.linear(f, params["fc1.weight"], params["fc1.bias"])
    a3 = F.relu(z3)
    z4 = F.linear(a3, params["fc2.weight"], params["fc2.bias"])
    inputs = {"conv1": x, "conv2": a1, "fc1": f, "fc2": a3}
    return z4, inputs, {"conv1": z1, "conv2": z2, "fc1": z3, "fc2": z4}


def output_cotangents(
    params: Params, x: torch.Tensor, y: torch.Tensor, loss: str
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(layer inputs, d(sum of per-example losses)/d(layer outputs)), both keyed by layer name."""
    with torch.enable_grad():
        logits, inputs, outputs = forward_to_outputs(params, x)
        total = loss_fn(logits, y, loss) * x.shape[0]  # mean -> sum: per-example cotangents
        cots = torch.autograd.grad(total, list(outputs.values()))
    return {k: v.detach() for k, v in inputs.items()}, dict(zip(outputs, cots))


def _conv_rule(a: torch.Tensor, g: torch.Tensor, w_out: torch.Tensor, b_out: torch.Tensor) -> None:
    """a: (b, C_in, H, W), g: (b, C_out, H', W') -> w_out (b, C_out, C_in, k, k), b_out (b, C_out)."""
    cols = F.unfold(a, KERNEL)  # (b, C_in*k*k, H'*W'), rows in (C_in, kh, kw) order = OIHW's trailing dims
    gm = g.flatten(2)  # (b, C_out, H'*W')
    torch.bmm(gm, cols.transpose(1, 2), out=w_out.view(g.shape[0], g.shape[1], -1))
    torch.sum(gm, dim=2, out=b_out)


def _linear_rule(a: torch.Tensor, g: torch.Tensor, w_out: torch.Tensor, b_out: torch.Tensor) -> None:
    """a: (b, in), g: (b, out) -> w_out (b, out, in) = outer products, b_out (b, out) = g."""
    torch.bmm(g.unsqueeze(2), a.unsqueeze(1), out=w_out)
    b_out.copy_(g)


_RULES = {"conv1": _conv_rule, "conv2": _conv_rule, "fc1": _linear_rule, "fc2": _linear_rule}


def empty_grads(batch_size: int, like: torch.Tensor) -> Params:
    """Uninitialised (B, *shape) outputs in ``like``'s dtype and device, canonical names."""
    return {n: torch.empty((batch_size, *s), dtype=like.dtype, device=like.device) for n, s in PARAM_SHAPES.items()}


def fill_per_layer_grads(params: Params, x: torch.Tensor, y: torch.Tensor, loss: str, out: Params) -> Params:
    """Per-sample gradients of the batch (x, y) written into ``out`` ({name: (B, *shape)}, contiguous)."""
    inputs, cots = output_cotangents(params, x, y, loss)
    for layer, rule in _RULES.items():
        rule(inputs[layer], cots[layer], out[f"{layer}.weight"], out[f"{layer}.bias"])
    return out


def per_layer_grads(
    params: Params, x: torch.Tensor, y: torch.Tensor, *, loss: str, chunk_size: int | None = None
) -> Params:
    """{name: (B, *shape)} per-sample gradients; with ``chunk_size`` at most that many samples per pass."""
    out = empty_grads(x.shape[0], x)
    step = chunk_size or x.shape[0]
    for lo in range(0, x.shape[0], step):
        sl = slice(lo, lo + step)
        fill_per_layer_grads(params, x[sl], y[sl], loss, {n: v[sl] for n, v in out.items()})
    return out
