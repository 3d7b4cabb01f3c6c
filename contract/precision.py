"""Rounding bounds of bfloat16 compute with float32 accumulation (derivations: docs/precision.md).

bfloat16 keeps 8 significant bits (7 stored + the implicit one): unit roundoff ``U_BF16 = 2^-8``; float32's is
``U_FP32 = 2^-24``. In the mixed mode (``contract.spec.MIXED``) a dot product of K terms takes bfloat16 operands
(each rounded: relative error <= u), forms each product exactly in float32 (8 + 8 significant bits <= 24),
accumulates in float32 and rounds the result to bfloat16:
    |s^ - s| <= u |s| + (2u + u^2 + (K - 1) U_FP32) sum_i |x_i y_i|                        (worst case)
so the float32 accumulation adds (K - 1) 2^-24 <= 2u only for K <= 2^17: for every layer here (largest K: the
seed CNN's fc1, 9216 = 0.14 u) the operands' rounding dominates, not K. With independent roundings the error
of the sum is a random walk, ~ u sqrt(2K/3) rms|x_i y_i| (typical). Through a network, a per-sample gradient
of a layer at depth d below the loss takes roundings of the forward activations (D of them on the path) and of
the cotangents (D), then the operands (2u) and the output (u) of its own product: ``gradient_bound`` = (2D + 3) u
relative to the gradient's scale, for the SMOOTH piece (same ReLU / max-pool decisions as float64); a
decision flipped by rounding is explained by replay (compare.agreement.precision), not by this bound.
"""
from __future__ import annotations

import math

U_BF16 = 2.0 ** -8
U_FP32 = 2.0 ** -24

# Depth D of bfloat16-rounded products on the longest path from the loss to a parameter's gradient (forward
# activations and cotangents each rounded once per parameterised layer above it; the LSTM's recurrence
# rounds its gate pre-activations once per time step (its state is float32); the transformer block: qkv, scores,
# values, out-projection, two MLP products; WRN-16-4: its 13 convolutions, the GroupNorms' affine products and
# the classifier on the longest path, 15 products deep).
BF16_DEPTH: dict[str, int] = {"logreg": 0, "ffnn": 1, "seed_cnn": 3, "mnist_cnn": 3, "cifar10_cnn": 7,
                              "embed": 1, "lstm": 257, "transformer": 13, "wrn16_4": 15}
CLIPPINGS: tuple[str, ...] = ("materialize", "ghost", "bk")


def gradient_bound(model: str, u: float = U_BF16) -> float:
    """(2D + 3) u: the per-sample gradient's bfloat16 error relative to its max |value|, smooth piece."""
    return (2 * BF16_DEPTH[model] + 3) * u


def float32_sum_bound(n: int) -> float:
    """Relative error of a float32 sum of n non-negative terms by a cascaded (pairwise) reduction, the form
    torch and XLA use for norms: ceil(log2 n) + 1 roundings of 2^-24."""
    return (math.ceil(math.log2(max(n, 2))) + 1) * U_FP32


def clip_bound(clipping: str, model: str, num_params: int) -> float:
    """delta with ||contribution_b|| <= C (1 + delta) for clipping strategy ``clipping`` in bfloat16.

    materialize / bk: the norm and the contribution are computed from the SAME float32 copies of bfloat16 values
    (the per-example gradient; bk: the layer inputs and output cotangents), so only float32 rounding separates
    them: the norm's sum (``float32_sum_bound``) plus the clipped sum's own products, 4 roundings.
    ghost: the contribution is a SECOND bfloat16 backward (same forward, same decisions) scaled by c_b: each of
    its D cotangent products and its output round once more (2D + 2 roundings of u, one for a torch first
    layer's input that the norm reads unrounded)."""
    if clipping not in CLIPPINGS:
        raise ValueError(f"unknown clipping {clipping!r}; expected one of {CLIPPINGS}")
    if clipping == "ghost":
        return (2 * BF16_DEPTH[model] + 2) * U_BF16
    return 2 * float32_sum_bound(num_params) + 4 * U_FP32
