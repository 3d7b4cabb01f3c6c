"""A pure-numpy float64 per-sample gradient of the seed CNN ONLY (``WORKLOAD``), with optional FORCED non-smooth
decisions; its layer sizes are written out below, so it checks no other workload.

Unforced, it is a third reference, independent of both frameworks (explicit im2col convolutions, hand-written
backward). Forced, it is the *decision-replay oracle*: the network is piecewise smooth, and a float32 run picks
one smooth piece through its ReLU gates and max-pool winners; forcing a framework's float32 decisions here
evaluates that same piece exactly, so the difference to the framework's float32 gradient is pure rounding.

Layout: canonical NCHW / PyTorch ``state_dict`` names throughout. Decisions (``DECISION_SHAPES``, per sample):
``conv1.relu`` (32,26,26), ``conv2.relu`` (64,24,24), ``fc1.relu`` (128,) bool gates (open where pre > 0);
``pool.winner`` (64,12,12) int8 in 0..3 = 2*dh + dw inside each 2x2 window (first index on ties).
"""
from __future__ import annotations

import numpy as np

from compare.spec import check_batch, check_loss

WORKLOAD = "seed_cnn"  # the one workload this oracle computes (``compare.agreement.explain.ORACLES``)
U32 = 2.0**-24  # unit roundoff of float32
DECISION_SHAPES: dict[str, tuple[int, ...]] = {
    "conv1.relu": (32, 26, 26), "conv2.relu": (64, 24, 24), "fc1.relu": (128,), "pool.winner": (64, 12, 12),
}
PRE_SHAPES: dict[str, tuple[int, ...]] = {"conv1.pre": (32, 26, 26), "conv2.pre": (64, 24, 24), "fc1.pre": (128,)}
Arrays = dict[str, np.ndarray]


def check_decisions(decisions: Arrays, batch_size: int) -> Arrays:
    """Every decision key present with shape (B, *DECISION_SHAPES[key]); pool winners in 0..3."""
    for key, shape in DECISION_SHAPES.items():
        if key not in decisions:
            raise ValueError(f"decisions: missing {key!r}; expected keys {list(DECISION_SHAPES)}")
        if decisions[key].shape != (batch_size, *shape):
            raise ValueError(f"decisions: {key}: expected shape {(batch_size, *shape)}, found {decisions[key].shape}")
    winners = decisions["pool.winner"]
    if winners.min() < 0 or winners.max() > 3:
        raise ValueError("decisions: pool.winner must lie in 0..3")
    return decisions


def _patches(a: np.ndarray) -> np.ndarray:
    """(B, C, H, W) -> (B, (H-2)*(W-2), C*9) im2col rows, columns in (C, kh, kw) order = OIHW.reshape(O, -1)."""
    b, c, h, w = a.shape
    view = np.lib.stride_tricks.sliding_window_view(a, (3, 3), axis=(2, 3))  # (B, C, H-2, W-2, 3, 3)
    return np.ascontiguousarray(view.transpose(0, 2, 3, 1, 4, 5)).reshape(b, (h - 2) * (w - 2), c * 9)


def _conv(patches: np.ndarray, weight: np.ndarray, bias: np.ndarray, hw: int) -> np.ndarray:
    """im2col rows (B, hw*hw, K) x OIHW weight -> (B, O, hw, hw)."""
    out = patches @ weight.reshape(weight.shape[0], -1).T + bias
    return out.transpose(0, 2, 1).reshape(patches.shape[0], weight.shape[0], hw, hw)


def to_windows(a: np.ndarray) -> np.ndarray:
    """(B, C, 24, 24) -> (B, C, 12, 12, 4), last axis = 2*dh + dw."""
    b, c, h, w = a.shape
    return a.reshape(b, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(b, c, h // 2, w // 2, 4)


def from_windows(a: np.ndarray) -> np.ndarray:
    """Inverse of ``to_windows``: (B, C, 12, 12, 4) -> (B, C, 24, 24)."""
    b, c, h, w, _ = a.shape
    return a.reshape(b, c, h, w, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(b, c, 2 * h, 2 * w)


def winner_mask(winners: np.ndarray) -> np.ndarray:
    """Pool winners (B, C, 12, 12) in 0..3 -> (B, C, 24, 24) bool, True at each window's winner."""
    return from_windows(np.eye(4, dtype=bool)[winners])


def forward(weights: Arrays, x: np.ndarray, forced: Arrays | None = None) -> Arrays:
    """float64 forward of x (B,1,28,28); with ``forced`` decisions the gates/winners are taken from it.

    Returns the cache the backward needs: patches, pre-activations (``conv1.pre`` ...), decisions, logits.
    """
    w = {k: np.asarray(v, np.float64) for k, v in weights.items()}
    c: Arrays = {"x": np.asarray(x, np.float64)}
    c["p1"] = _patches(c["x"])
    c["conv1.pre"] = _conv(c["p1"], w["conv1.weight"], w["conv1.bias"], 26)
    c["conv1.relu"] = forced["conv1.relu"] if forced else c["conv1.pre"] > 0
    c["p2"] = _patches(c["conv1.pre"] * c["conv1.relu"])
    c["conv2.pre"] = _conv(c["p2"], w["conv2.weight"], w["conv2.bias"], 24)
    c["conv2.relu"] = forced["conv2.relu"] if forced else c["conv2.pre"] > 0
    windows = to_windows(c["conv2.pre"] * c["conv2.relu"])
    c["pool.winner"] = forced["pool.winner"] if forced else np.argmax(windows, axis=-1).astype(np.int8)
    pooled = np.take_along_axis(windows, c["pool.winner"][..., None].astype(np.intp), axis=-1)[..., 0]
    c["flat"] = pooled.reshape(pooled.shape[0], -1)  # (B, 9216) in (C, H, W) order, like torch.flatten
    c["fc1.pre"] = c["flat"] @ w["fc1.weight"].T + w["fc1.bias"]
    c["fc1.relu"] = forced["fc1.relu"] if forced else c["fc1.pre"] > 0
    c["h3"] = c["fc1.pre"] * c["fc1.relu"]
    c["logits"] = c["h3"] @ w["fc2.weight"].T + w["fc2.bias"]
    return c


def _dlogits(logits: np.ndarray, y: np.ndarray, loss: str) -> np.ndarray:
    """d(per-sample loss)/d(logits), (B, 10): softmax - onehot, or -onehot for the seed's raw-logit nll."""
    onehot = np.eye(logits.shape[1])[y]
    if loss == "seed":
        return -onehot
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True) - onehot


def _col2im(dpatches: np.ndarray, channels: int, hw: int) -> np.ndarray:
    """Transpose of ``_patches``: (B, hw*hw, C*9) -> (B, C, hw+2, hw+2), summing overlapping windows."""
    b = dpatches.shape[0]
    d = dpatches.reshape(b, hw, hw, channels, 3, 3).transpose(0, 3, 1, 2, 4, 5)
    out = np.zeros((b, channels, hw + 2, hw + 2))
    for i in range(3):
        for j in range(3):
            out[:, :, i:i + hw, j:j + hw] += d[..., i, j]
    return out


def backward(weights: Arrays, c: Arrays, y: np.ndarray, loss: str) -> Arrays:
    """Per-sample gradients ``{name: (B, *shape)}`` of each sample's own loss, from a ``forward`` cache."""
    w = {k: np.asarray(v, np.float64) for k, v in weights.items()}
    b = c["x"].shape[0]
    g: Arrays = {}
    dl = _dlogits(c["logits"], y, loss)
    g["fc2.weight"], g["fc2.bias"] = dl[:, :, None] * c["h3"][:, None, :], dl
    dz3 = (dl @ w["fc2.weight"]) * c["fc1.relu"]
    g["fc1.weight"], g["fc1.bias"] = dz3[:, :, None] * c["flat"][:, None, :], dz3
    dpooled = (dz3 @ w["fc1.weight"]).reshape(b, 64, 12, 12)
    dwin = np.zeros((b, 64, 12, 12, 4))
    np.put_along_axis(dwin, c["pool.winner"][..., None].astype(np.intp), dpooled[..., None], axis=-1)
    dz2 = (from_windows(dwin) * c["conv2.relu"]).reshape(b, 64, -1)  # (B, 64, 576)
    g["conv2.weight"] = (dz2 @ c["p2"]).reshape(b, *w["conv2.weight"].shape)
    g["conv2.bias"] = dz2.sum(axis=2)
    dh1 = _col2im(dz2.transpose(0, 2, 1) @ w["conv2.weight"].reshape(64, -1), 32, 24)
    dz1 = (dh1 * c["conv1.relu"]).reshape(b, 32, -1)  # (B, 32, 676)
    g["conv1.weight"] = (dz1 @ c["p1"]).reshape(b, *w["conv1.weight"].shape)
    g["conv1.bias"] = dz1.sum(axis=2)
    return g


def per_sample_grads(
    weights: Arrays, x: np.ndarray, y: np.ndarray, *, loss: str = "nll_log_softmax", forced: Arrays | None = None
) -> Arrays:
    """float64 per-sample gradients ``{name: (B, *shape)}``; ``forced`` decisions (B, ...) make it the replay oracle."""
    check_batch(x, y, WORKLOAD)
    check_loss(loss)
    if forced is not None:
        check_decisions(forced, x.shape[0])
    return backward(weights, forward(weights, x, forced), y, loss)


def rounding_scales(weights: Arrays, c: Arrays) -> Arrays:
    """u*S per pre-activation: S = conv(|a|, |W|) + |b| (conv) or |a| @ |W|^T + |b| (fc), the absolute sum
    each float32 dot product accumulates; its rounding error is a small multiple of U32 * S."""
    w = {k: np.abs(np.asarray(v, np.float64)) for k, v in weights.items()}
    return {
        "conv1.pre": U32 * _conv(np.abs(c["p1"]), w["conv1.weight"], w["conv1.bias"], 26),
        "conv2.pre": U32 * _conv(np.abs(c["p2"]), w["conv2.weight"], w["conv2.bias"], 24),
        "fc1.pre": U32 * (np.abs(c["flat"]) @ w["fc1.weight"].T + w["fc1.bias"]),
    }


def decision_margins(weights: Arrays, c: Arrays) -> Arrays:
    """How far each float64 decision of a ``forward`` cache is from flipping, in units of its rounding scale u*S.

    ``conv1.relu``/``conv2.relu``/``fc1.relu``: |pre| / (u*S), same shapes as the gates.
    ``pool.winner``: (B, 64, 12, 12, 4) post-ReLU gap between the window's winner and each position, over
    u * max(S_winner, S_position) (0 at the winner).
    """
    scales = rounding_scales(weights, c)
    out = {f"{k.split('.')[0]}.relu": np.abs(c[k]) / scales[k] for k in PRE_SHAPES}
    values = to_windows(c["conv2.pre"] * c["conv2.relu"])
    us = to_windows(scales["conv2.pre"])
    win = c["pool.winner"][..., None].astype(np.intp)
    gap = np.take_along_axis(values, win, -1) - values
    out["pool.winner"] = gap / np.maximum(np.take_along_axis(us, win, -1), us)
    return out


def near_kinks(c: Arrays, margins: Arrays, threshold: float) -> list[tuple[str, tuple[int, ...], float]]:
    """Float64 decisions whose gradient matters and that lie within ``threshold`` u*S of flipping.

    Returns (decision key, (sample, channel[, h, w]), margin). conv2 gates count only at pool winners;
    pool near-ties only between two open gates (a tie with a ReLU'd zero is the winner's own ReLU kink).
    """
    at_winner = winner_mask(c["pool.winner"])
    rivals = to_windows(c["conv2.relu"] & ~at_winner)  # (B, 64, 12, 12, 4): open gates other than the winner
    pool = np.where(rivals, margins["pool.winner"], np.inf).min(axis=-1)
    near = {
        "conv1.relu": margins["conv1.relu"],
        "conv2.relu": np.where(at_winner, margins["conv2.relu"], np.inf),
        "fc1.relu": margins["fc1.relu"],
        "pool.winner": pool,
    }
    return [(k, tuple(int(i) for i in idx), float(m[idx]))
            for k, m in near.items() for idx in zip(*np.nonzero(m < threshold))]
