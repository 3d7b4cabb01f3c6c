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
layers by forward hooks) would see no call of out_proj. ``MultiheadSelfAttention`` (``torch_impl.layers``) owns
the same parameters (same names, same packing, same math, no dropout, no mask) and calls ``self.out_proj`` as a module:
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

import torch
import torch.nn as nn
import torch.nn.functional as F

from torch_impl.layers import LearnedPositions, MultiheadSelfAttention, Projection, attend  # noqa: F401 - re-exported

VOCAB, SEQ_LEN, WIDTH, HEADS, FF, LAYERS, CLASSES = 10004, 128, 256, 4, 1024, 2, 2


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
