"""The benchmark run's settings: what ``python -m compare.run`` parsed, shared by the CLI and the sweep."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

QUICK_BATCH_SIZES = (32,)  # one batch, every method of both frameworks (~18 points of ~2-5 s each when idle)
FULL_BATCH_SIZES = (16, 32, 64, 128, 256, 512, 1024)
# Every point gets this environment (the parent's, plus these): the same for both frameworks, recorded in meta.
# "nonreleasing" keeps glibc from returning big buffers to the OS, so neither framework pays page faults on
# every call for its fresh output (see ../shared/FINDINGS.md); "system" leaves malloc as inherited.
MALLOC_ENV = {
    "nonreleasing": {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 40)},
    "system": {},
}


@dataclass(frozen=True)
class Config:
    weights: Path | None
    out: Path
    batch_sizes: tuple[int, ...]
    frameworks: tuple[str, ...]
    methods: tuple[str, ...] | None  # None: every method of each framework
    dtype: str
    device: str | None
    repeats: int
    min_seconds: float
    timeout: float
    resume: bool
    full: bool
    loss: str
    seed: int
    agreement_batch_size: int
    agreement: bool
    figures: bool
    malloc: str
    env: tuple[tuple[str, str], ...]
