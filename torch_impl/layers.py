"""Layer classes shared by several workloads and by the per-layer rules (mirrors ``jax_impl.layers``).

A rule file imports its layer class from here, never from a workload (``torch_impl.models``), so a kind is one
rule file plus, where torch has no module for it, one class here.
  LSTM                    nn.LSTM's parameters, written with visible ops (``torch.func.vmap`` cannot batch
                          ``aten::lstm``); kind "lstm" (``rules/lstm.py``), recorded at its ``GateInput``.
  GateInput               the LSTM's input projection x W_ih^T + b_ih + b_hh with its PARENT's parameters.
  Projection              ``F.linear`` with its PARENT's parameters; kind "projection" (``rules/projection.py``).
  MultiheadSelfAttention  ``nn.MultiheadAttention``'s parameters, its in-projection through a ``Projection``.
  LearnedPositions        a (T, d) table added to (B, T, d) activations; kind "param_add" (``rules/param_add.py``).
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn import init


def _steps(pre: torch.Tensor, weight_hh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(h, c (B, T, H), gate activations i, f, g, o (B, T, 4H)) of the recurrence below."""
    b, _, four_h = pre.shape
    h = pre.new_zeros(b, four_h // 4)
    c = pre.new_zeros(b, four_h // 4)
    hs, cs, acts = [], [], []
    # unbind, not pre[:, t]: the backward of T slices writes T full-size (B, T, 4H) zero-padded gradients
    # (measured B=64, T=256: 12.8 GiB peak, 13.8 s for the SGD gradient); unbind's backward stacks them once.
    for pre_t in pre.unbind(1):
        z = torch.addmm(pre_t, h, weight_hh.t())
        i, f, g, o = z.chunk(4, dim=1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c = f * c + i * g
        h = o * torch.tanh(c)
        hs.append(h)
        cs.append(c)
        acts.append(torch.cat([i, f, g, o], dim=1))
    return torch.stack(hs, dim=1), torch.stack(cs, dim=1), torch.stack(acts, dim=1)


class _Recurrence(torch.autograd.Function):
    """The recurrence with its own backward: one reverse loop for dz_t, then d weight_hh = sum_t dz_t^T h_{t-1} as
    ONE (4H x BT) (BT x H) matmul (autograd of the loop computes and accumulates a (4H x B) (B x H) weight gradient
    per step). Mirrors ``jax_impl.layers.recurrence``; written with torch ops only, so ``torch.func`` transforms
    batch it (``generate_vmap_rule``)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(pre: torch.Tensor, weight_hh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return _steps(pre, weight_hh)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
        h, c, acts = output
        ctx.save_for_backward(h, c, acts, inputs[1])
        ctx.mark_non_differentiable(c, acts)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor, _c: Any, _acts: Any) -> tuple[torch.Tensor, torch.Tensor]:
        h, c, acts, weight_hh = ctx.saved_tensors
        hidden = h.shape[2]
        dh_next = g.new_zeros(g.shape[0], hidden)
        dc_next = g.new_zeros(g.shape[0], hidden)
        dz = []
        for t in range(h.shape[1] - 1, -1, -1):
            i, f, gg, o = acts[:, t].chunk(4, dim=1)
            c_prev = c[:, t - 1] if t > 0 else torch.zeros_like(dc_next)
            dh = g[:, t] + dh_next
            tc = torch.tanh(c[:, t])
            dc = dc_next + dh * o * (1 - tc * tc)
            dz_t = torch.cat([dc * gg * i * (1 - i), dc * c_prev * f * (1 - f), dc * i * (1 - gg * gg),
                              dh * tc * o * (1 - o)], dim=1)
            dz.append(dz_t)
            dh_next, dc_next = dz_t @ weight_hh, dc * f
        dz = torch.stack(dz[::-1], dim=1)
        h_prev = torch.cat([torch.zeros_like(h[:, :1]), h[:, :-1]], dim=1)
        d_weight = dz.reshape(-1, dz.shape[2]).t() @ h_prev.reshape(-1, hidden)
        return dz, d_weight


def recurrence(pre: torch.Tensor, weight_hh: torch.Tensor) -> torch.Tensor:
    """Hidden states (B, T, H) of the LSTM from its input pre-activations ``pre`` = x W_ih^T + b_ih + b_hh
    (B, T, 4H), zero initial state: z_t = pre_t + h_{t-1} W_hh^T; i, f, g, o = sigma, sigma, tanh, sigma of its
    quarters; c_t = f c_{t-1} + i g; h_t = o tanh(c_t). Differentiated by ``_Recurrence.backward``, as JAX's by
    its own (where it makes the SGD step 1.1-1.3x faster); here the lstm SGD step with autograd of the loop was
    1.29x [0.95, 1.58] this one at B = 16 and 1.00x [0.94, 1.08] at B = 64 (paper/perf-sgd/)."""
    if torch.compiler.is_compiling():  # dynamo cannot trace the Function under torch.func.vmap (torch 2.15:
        return _steps(pre, weight_hh)[0]  # "You tried to vmap over ApplyTemplate"): autograd of the loop there
    return _Recurrence.apply(pre, weight_hh)[0]


class GateInput(nn.Module):
    """The LSTM's gate input pre-activations x W_ih^T + b_ih + b_hh (B, T, 4H), with its PARENT's parameters; owns
    none. Why a module: the engine records a layer at a module call, and the cotangent of this call's output is
    the cotangent of the gate pre-activations z_t = pre_t + h_t-1 W_hh^T (z is pre plus a term that does not
    depend on pre), which, with the layer's input and hidden states, gives all four leaves' gradients
    (``torch_impl.rules.lstm``). ``applies`` names them: the parent's site is this call
    (``torch_impl.rules.site_module``)."""

    applies = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")

    def forward(self, x: torch.Tensor, weight_ih: torch.Tensor, bias_ih: torch.Tensor,
                bias_hh: torch.Tensor) -> torch.Tensor:
        return torch.matmul(x, weight_ih.t()) + (bias_ih + bias_hh)


class LSTM(nn.Module):
    """One-layer, unidirectional, batch-first LSTM with nn.LSTM's parameters; (B, T, in) -> (B, T, H).

    Why not ``nn.LSTM``: it is one fused op (``aten::lstm``) that ``torch.func.vmap`` cannot batch (torch 2.15:
    "Batching rule not implemented for aten::lstm.input"), so neither the vmap / compile methods nor a vmap
    fallback would run on it. Same parameter names, shapes, gate order (i, f, g, o), two biases and default init
    (same RNG draws) as nn.LSTM (tests/test_lstm.py checks the forward against nn.LSTM)."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.weight_ih_l0 = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.weight_hh_l0 = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        self.bias_ih_l0 = nn.Parameter(torch.empty(4 * hidden_size))
        self.bias_hh_l0 = nn.Parameter(torch.empty(4 * hidden_size))
        self.gates = GateInput()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.LSTM's: every parameter U(-1/sqrt(H), 1/sqrt(H)), in the same order (the same RNG draws)."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            init.uniform_(p, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.gates(x, self.weight_ih_l0, self.bias_ih_l0, self.bias_hh_l0)
        return recurrence(pre, self.weight_hh_l0)

    def opacus_equivalent(self) -> nn.Module:
        """What an Opacus user puts here: ``opacus.layers.DPLSTM`` (batch-first, uninitialised; the same
        parameter names, gate order and two biases; it returns (output, (h_n, c_n)) like nn.LSTM)."""
        from opacus.layers import DPLSTM

        with torch.device(self.weight_hh_l0.device):  # built there: a later .to(meta) would untie the renamed
            dp = DPLSTM(self.input_size, self.hidden_size, batch_first=True)  # parameters from the cells' own
        return dp.to(dtype=self.weight_hh_l0.dtype)


class LearnedPositions(nn.Module):
    """A learned (T, d) table ADDED to the (B, T, d) activations (kind "param_add" in ``torch_impl.rules``:
    each example's gradient is its own output cotangent, no per-example work at all)."""

    def __init__(self, seq_len: int, width: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(seq_len, width) * 0.02)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if h.shape[-2:] != self.weight.shape:
            raise ValueError(f"positions {tuple(self.weight.shape)} do not match activations {tuple(h.shape)}")
        return h + self.weight


def attend(qkv: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, T, 3d) packed [q | k | v] (each d = heads x head_dim) -> (B, T, d): softmax(q k^T / sqrt(hd)) v per
    head, heads concatenated in order (``nn.MultiheadAttention``'s math without dropout and masks)."""
    b, t, three_d = qkv.shape
    hd = three_d // (3 * heads)
    q, k, v = qkv.reshape(b, t, 3, heads, hd).permute(2, 0, 3, 1, 4)  # each (B, H, T, hd)
    scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(hd)
    return torch.matmul(torch.softmax(scores, dim=-1), v).transpose(1, 2).reshape(b, t, heads * hd)


class Projection(nn.Module):
    """``F.linear(x, weight, bias)`` with its PARENT's parameters passed in; owns none. ``weight`` / ``bias``
    name the parent's attributes it applies. Why a module: the engine records a layer's (input, output
    cotangent) at a module call, and a parent whose OWN parameters all go through one such child is recorded at
    the child's call (``torch_impl.rules.site_module``, kind "projection"), while the parameters keep the
    parent's canonical names (``in_proj_weight``, not ``in_proj.weight``)."""

    def __init__(self, weight: str, bias: str | None) -> None:
        super().__init__()
        self.weight_name, self.bias_name = weight, bias
        self.applies = (weight,) if bias is None else (weight, bias)

    def forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return F.linear(x, weight, bias)


class MultiheadSelfAttention(nn.Module):
    """Self-attention with ``nn.MultiheadAttention``'s parameters: ``in_proj_weight`` (3d, d), ``in_proj_bias``
    (3d,), ``out_proj`` (nn.Linear); init as torch's (xavier-uniform in-projection, zero biases). The packed
    in-projection is applied by a parameter-free ``Projection`` child, so its rule sees d loss / d [q|k|v].
    Why not ``nn.MultiheadAttention``: its forward reads ``out_proj.weight`` directly, so out_proj's forward hook
    never fires and the engine (which finds layers by forward hooks) would see no call of out_proj."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.in_proj = Projection("in_proj_weight", "in_proj_bias")
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_proj(attend(self.in_proj(x, self.in_proj_weight, self.in_proj_bias), self.heads))
