"""The non-smooth decisions of PyTorch's forward: ReLU gates and max-pool winners, in canonical NCHW numpy.

A per-sample gradient is the gradient of one smooth piece of a piecewise-smooth function; the piece is
chosen by these decisions. Comparing them between float32 and float64 explains gradients that jump
(see ``compare.agreement.oracle``). Mirrored by ``jax_impl.decisions``; keys and shapes in ``compare.agreement.oracle.DECISION_SHAPES``.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap

from compare.agreement.oracle import check_decisions
from torch_impl.model import SimpleCNN
from torch_impl.per_sample import native_inputs

_TEMPLATE = SimpleCNN().to("meta")


def _sample_forward(params: dict[str, torch.Tensor], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """ONE example (1, 28, 28), run as a batch of one through the model's own layers (as ``vmap`` sees it)."""
    x = x.unsqueeze(0)
    z1 = functional_call(_TEMPLATE.conv1, {"weight": params["conv1.weight"], "bias": params["conv1.bias"]}, (x,))
    z2 = functional_call(_TEMPLATE.conv2, {"weight": params["conv2.weight"], "bias": params["conv2.bias"]}, (F.relu(z1),))
    pooled, idx = F.max_pool2d(F.relu(z2), 2, return_indices=True)  # backward routes through idx
    z3 = functional_call(_TEMPLATE.fc1, {"weight": params["fc1.weight"], "bias": params["fc1.bias"]},
                         (torch.flatten(pooled, 1),))
    return {"conv1.pre": z1[0], "conv2.pre": z2[0], "fc1.pre": z3[0], "pool.flat_index": idx[0]}


def _window_index(flat_index: np.ndarray, width: int) -> np.ndarray:
    """Flat index into the (24, 24) plane -> position 0..3 (= 2*dh + dw) inside its 2x2 window."""
    return ((flat_index // width) % 2 * 2 + (flat_index % width) % 2).astype(np.int8)


def forward_decisions(
    weights: dict[str, np.ndarray], x: np.ndarray, *, dtype: str = "float32", device: str | None = None
) -> dict[str, np.ndarray]:
    """Pre-activations and decisions of the forward in ``dtype`` (vmapped per-sample, like method "vmap").

    Returns ``conv1.pre`` (B,32,26,26), ``conv2.pre`` (B,64,24,24), ``fc1.pre`` (B,128) in ``dtype``;
    ``conv1.relu``/``conv2.relu``/``fc1.relu`` bool gates (pre > 0: torch's ReLU passes no gradient at 0);
    ``pool.winner`` (B,64,12,12) int8 in 0..3, the window position max_pool2d's backward routes to.
    """
    y = np.zeros(x.shape[0], np.int64)  # labels are irrelevant to the forward; native_inputs validates x
    params, xt, _ = native_inputs(weights, x, y, dtype=dtype, device=device)
    with torch.no_grad():
        out = vmap(_sample_forward, in_dims=(None, 0))(params, xt)
    pre = {k: v.cpu().numpy() for k, v in out.items()}
    width = pre["conv2.pre"].shape[-1]
    decisions = {
        "conv1.pre": pre["conv1.pre"],
        "conv2.pre": pre["conv2.pre"],
        "fc1.pre": pre["fc1.pre"],
        "pool.winner": _window_index(pre["pool.flat_index"], width),
    }
    for layer in ("conv1", "conv2", "fc1"):
        decisions[f"{layer}.relu"] = decisions[f"{layer}.pre"] > 0
    return check_decisions(decisions, x.shape[0])

