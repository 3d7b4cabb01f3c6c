"""DP-SGD hyper-parameter checks shared by both sides' private steps and the trainer."""
from __future__ import annotations

import math


class DPConfigError(ValueError):
    """A DP-SGD or accounting parameter outside its meaningful range."""


def check_dp_params(*, lr: float, clip: float, noise_multiplier: float) -> None:
    """Reject what would train silently wrong: clip <= 0, negative noise, infinite noise, bad lr."""
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise DPConfigError(f"learning rate must be a positive finite number, got {lr!r}")
    if not (isinstance(clip, (int, float)) and clip > 0):
        raise DPConfigError(f"clip (per-example L2 norm bound) must be > 0, got {clip!r}")
    if not (isinstance(noise_multiplier, (int, float)) and math.isfinite(noise_multiplier) and noise_multiplier >= 0):
        raise DPConfigError(f"noise_multiplier must be a finite number >= 0, got {noise_multiplier!r}")
    if math.isinf(clip) and noise_multiplier > 0:
        raise DPConfigError("noise_multiplier > 0 needs a finite clip (noise std = clip * noise_multiplier)")


def check_delta(delta: float) -> float:
    if not (isinstance(delta, (int, float)) and 0 < delta < 1):
        raise DPConfigError(f"delta must lie strictly between 0 and 1, got {delta!r}")
    return float(delta)
