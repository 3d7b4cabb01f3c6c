"""DP-SGD hyper-parameter checks and privacy accounting through Opacus' maintained accountants.

No accountant is written here: ``epsilon`` hands (noise_multiplier, sample_rate, steps) to Opacus'
``PRVAccountant`` (Gopi et al. 2021, tight numerical composition) or ``RDPAccountant`` (Mironov 2017).
Both assume Poisson sampling at rate ``batch_size / n``; like most DP-SGD code (and Opacus without
``poisson_sampling``), the trainer draws shuffled fixed-size batches instead, and says so in its output.
"""
from __future__ import annotations

import math
import warnings

from contract.privacy import DPConfigError, check_delta, check_dp_params  # noqa: F401 - re-exported

ACCOUNTANTS: tuple[str, ...] = ("prv", "rdp")

def epsilon(
    *, noise_multiplier: float, sample_rate: float, steps: int, delta: float, accountant: str = "prv"
) -> float:
    """(epsilon, delta)-DP epsilon of ``steps`` subsampled Gaussian steps; ``inf`` without noise (no guarantee)."""
    check_delta(delta)
    if accountant not in ACCOUNTANTS:
        raise DPConfigError(f"unknown accountant {accountant!r}; expected one of {ACCOUNTANTS}")
    if not 0 < sample_rate <= 1:
        raise DPConfigError(f"sample_rate must lie in (0, 1], got {sample_rate!r}")
    if steps < 1:
        raise DPConfigError(f"steps must be >= 1, got {steps!r}")
    if not (math.isfinite(noise_multiplier) and noise_multiplier >= 0):
        raise DPConfigError(f"noise_multiplier must be a finite number >= 0, got {noise_multiplier!r}")
    if noise_multiplier == 0:
        return math.inf
    from opacus.accountants import PRVAccountant, RDPAccountant

    acc = PRVAccountant() if accountant == "prv" else RDPAccountant()
    acc.history = [(float(noise_multiplier), float(sample_rate), int(steps))]
    with warnings.catch_warnings():
        # RDP warns when the best order is at the edge of its default grid; the bound is still valid.
        warnings.simplefilter("ignore", UserWarning)
        return float(acc.get_epsilon(delta=delta))
