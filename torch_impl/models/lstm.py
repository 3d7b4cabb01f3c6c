"""lstm: fast-dpsgd's IMDb LSTM: Embedding(10004, 100), LSTM(100, 100), mean over the 256 positions' hidden
states, Linear(100, 2) (1,081,402 parameters).

The LSTM is written out here (``LSTM``) instead of ``nn.LSTM``, with nn.LSTM's parameter names, shapes, gate
order (i, f, g, o), two bias vectors and default init (same RNG draws: ``init_weights`` gives nn.LSTM's weights),
and returns the hidden states alone. Why: ``nn.LSTM`` is one fused op (``aten::lstm``), and
``torch.func.vmap`` cannot batch it (torch 2.15: "Batching rule not implemented for aten::lstm.input. We could
not generate a fallback."; under ``grad`` the CPU kernel writes into an unbatched output, "output with shape
[1, 4H] doesn't match the broadcast shape [B, 1, 4H]"), so neither the vmap / compile methods nor a vmap
fallback of the layer would run on it. Written with visible ops, every torch.func method batches it, and the
per-layer rule (``torch_impl.rules.lstm``) gets the gate cotangents by differentiating the layer's own
recurrence (tests/test_lstm.py checks the forward against nn.LSTM loaded with the same state_dict).
Opacus users replace nn.LSTM by ``opacus.layers.DPLSTM`` (same state_dict names); ``opacus_equivalent`` is that
swap, used by the Opacus methods and peers (``torch_impl.opacus_methods.live_module``).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.nn import init


def recurrence(pre: torch.Tensor, weight_hh: torch.Tensor) -> torch.Tensor:
    """Hidden states (B, T, H) of the LSTM from its input pre-activations ``pre`` = x W_ih^T + b_ih + b_hh
    (B, T, 4H), zero initial state: z_t = pre_t + h_{t-1} W_hh^T; i, f, g, o = sigma, sigma, tanh, sigma of its
    quarters; c_t = f c_{t-1} + i g; h_t = o tanh(c_t)."""
    b, _, four_h = pre.shape
    hidden = four_h // 4
    h = pre.new_zeros(b, hidden)
    c = pre.new_zeros(b, hidden)
    out = []
    # unbind, not pre[:, t]: the backward of T slices writes T full-size (B, T, 4H) zero-padded gradients
    # (measured B=64, T=256: 12.8 GiB peak, 13.8 s for the SGD gradient); unbind's backward stacks them once.
    for pre_t in pre.unbind(1):
        z = torch.addmm(pre_t, h, weight_hh.t())
        i, f, g, o = z.chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        out.append(h)
    return torch.stack(out, dim=1)


def _plain(t: torch.Tensor) -> bool:
    """A real tensor, not one of torch.func's wrappers (vmap / grad) nor a tensor being traced by Dynamo."""
    return not torch.compiler.is_compiling() and not torch._C._functorch.is_functorch_wrapped_tensor(t)


class LSTM(nn.Module):
    """One-layer, unidirectional, batch-first LSTM with nn.LSTM's parameters; (B, T, in) -> (B, T, H).

    ``last_weights`` keeps the parameter tensors of the latest plain forward (detached): the per-layer rules
    receive only (layer, input, output cotangent), and the hooked template module holds meta parameters outside
    ``functional_call``, so this is how ``torch_impl.rules.lstm`` reads the weights the recorded forward used.
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.weight_ih_l0 = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.weight_hh_l0 = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        self.bias_ih_l0 = nn.Parameter(torch.empty(4 * hidden_size))
        self.bias_hh_l0 = nn.Parameter(torch.empty(4 * hidden_size))
        self.last_weights: tuple[torch.Tensor, ...] | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.LSTM's: every parameter U(-1/sqrt(H), 1/sqrt(H)), in the same order (the same RNG draws)."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            init.uniform_(p, -bound, bound)

    def weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.weight_ih_l0, self.weight_hh_l0, self.bias_ih_l0, self.bias_hh_l0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w_ih, w_hh, b_ih, b_hh = ws = self.weights()
        if _plain(w_hh):
            self.last_weights = tuple(w.detach() for w in ws)
        return recurrence(torch.matmul(x, w_ih.t()) + (b_ih + b_hh), w_hh)

    def opacus_equivalent(self) -> nn.Module:
        """What an Opacus user puts here: ``opacus.layers.DPLSTM`` (batch-first, uninitialised; the same
        parameter names, gate order and two biases; it returns (output, (h_n, c_n)) like nn.LSTM)."""
        from opacus.layers import DPLSTM

        with torch.device(self.weight_hh_l0.device):  # built there: a later .to(meta) would untie the renamed
            dp = DPLSTM(self.input_size, self.hidden_size, batch_first=True)  # parameters from the cells' own
        return dp.to(dtype=self.weight_hh_l0.dtype)


class LSTMNet(nn.Module):
    def __init__(self, vocab: int = 10004, embed: int = 100, hidden: int = 100, classes: int = 2) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, embed)
        self.lstm = LSTM(embed, hidden)
        self.fc = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T) int64 token ids (T = 256 for the workload) -> logits (B, 2)."""
        h = self.lstm(self.embedding(x))
        h = h[0] if isinstance(h, tuple) else h  # DPLSTM (Opacus' swap) returns (output, (h_n, c_n))
        return self.fc(h.mean(dim=1))
