"""Number formats shared by the run's summary tables (plain text: ``-`` for a missing value) and the results
document (markdown: ``–``): one place for how many digits a time or a ratio gets."""
from __future__ import annotations


def num(v: float | None, spec: str = ".2f", missing: str = "-") -> str:
    return missing if v is None else format(v, spec)


def ms(v: float | None, missing: str = "-") -> str:
    """Milliseconds with 3 significant digits (0.123, 12.3, 1234)."""
    if v is None:
        return missing
    return f"{v:.3g}" if v < 100 else f"{v:.0f}"
