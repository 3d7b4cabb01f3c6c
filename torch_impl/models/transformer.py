"""transformer: token embedding (10004, 256) + learned positions (128, 256), 2 pre-LayerNorm encoder blocks
(4-head self-attention with bias, MLP 256 -> 1024 -> 256 with tanh-form GELU), final LayerNorm, mean over the 128
positions, Linear(256, 2): 4,174,338 parameters.

Canonical names = exactly the ``state_dict`` a PyTorch user gets from ``nn.TransformerEncoder(
nn.TransformerEncoderLayer(256, 4, 1024, dropout=0.0, activation=nn.GELU(approximate="tanh"), batch_first=True,
norm_first=True), 2, norm=nn.LayerNorm(256))`` kept as ``encoder``, with ``embedding`` (nn.Embedding), the
positions ``pos_embedding.weight`` (128, 256) (what ``nn.Embedding(128, 256)`` indexed by arange would give) and
``fc``: ``encoder.layers.{i}.self_attn.in_proj_weight`` (768, 256) packed [q; k; v], each 256 rows = 4 heads x
64, ``self_attn.in_proj_bias``, ``self_attn.out_proj.{weight,bias}``, ``linear1``, ``linear2``, ``norm1``,
``norm2``, ``encoder.norm``. tests/test_transformer.py loads these weights into that torch stack and checks the
logits.

Why not ``nn.MultiheadAttention`` itself: its forward is ``F.multi_head_attention_forward``, which reads
``out_proj.weight`` directly, so out_proj's forward hook never fires and ``per_layer`` / ``ghost`` (which find
layers by forward hooks) would see no call of out_proj. ``MultiheadSelfAttention`` below owns the same
parameters (same names, same packing, same math, no dropout, no mask) and calls ``self.out_proj`` as a module:
out_proj is then an ordinary linear-kind layer on (B, T, 256). The packed in-projection is a raw parameter pair of
the attention module (torch's names); it is applied through a parameter-free ``Projection`` child, at whose call
the engine records the attention module's site (``torch_impl.rules.site_module``): a = the block's normed input,
g = d loss / d [q|k|v], and the linear rules (Gram or materialise by the cost model, book-keeping sums) apply.
Before that rule it took the vmap fallback over the whole attention module: exact but slow -- measured
(scripts/seq_cost_model.py, paper/cpu-seq-costmodel/, B = 64, float32, 1 thread), the fallback's in-projection
norm took 95 / 543 / 3119 ms in torch at T = 32 / 128 / 512 where the linear rule's faster form takes 3.0 / 79 /
170 ms on the same layer (JAX: 108 / 645 / 3175 vs 9.1 / 65 / 520 ms).
Opacus (hooks, ghost and functorch modes) treats this module as one unit by its functorch fallback (it has no
Opacus grad sampler; out_proj gets no hook of its own) and needs no DPMultiheadAttention (that replacement is
for ``nn.MultiheadAttention``, whose q / k / v it splits into separate Linear modules with other names).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

VOCAB, SEQ_LEN, WIDTH, HEADS, FF, LAYERS, CLASSES = 10004, 128, 256, 4, 1024, 2, 2


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
    in-projection is applied by a parameter-free ``Projection`` child, so its rule sees d loss / d [q|k|v]."""

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


class EncoderLayer(nn.Module):
    """``nn.TransformerEncoderLayer(norm_first=True, dropout=0, activation=gelu tanh)``: submodules declared in
    its order, so the state_dict keys come in its order too."""

    def __init__(self, width: int, heads: int, ff: int) -> None:
        super().__init__()
        self.self_attn = MultiheadSelfAttention(width, heads)
        self.linear1 = nn.Linear(width, ff)
        self.linear2 = nn.Linear(ff, width)
        self.norm1 = nn.LayerNorm(width)
        self.norm2 = nn.LayerNorm(width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h + self.self_attn(self.norm1(h))
        return h + self.linear2(F.gelu(self.linear1(self.norm2(h)), approximate="tanh"))


class Encoder(nn.Module):
    """``nn.TransformerEncoder``'s names: ``layers`` (a ModuleList) and the final ``norm``."""

    def __init__(self, width: int, heads: int, ff: int, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(width, heads, ff) for _ in range(num_layers))
        self.norm = nn.LayerNorm(width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            h = layer(h)
        return self.norm(h)


class TransformerNet(nn.Module):
    """x (B, T) int64 token ids -> logits (B, classes). Defaults: the registered workload; tests build small
    variants (tests/test_transformer.py)."""

    def __init__(self, vocab: int = VOCAB, seq_len: int = SEQ_LEN, width: int = WIDTH, heads: int = HEADS,
                 ff: int = FF, num_layers: int = LAYERS, classes: int = CLASSES) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, width)
        self.pos_embedding = LearnedPositions(seq_len, width)
        self.encoder = Encoder(width, heads, ff, num_layers)
        self.fc = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.encoder(self.pos_embedding(self.embedding(x))).mean(dim=1))
