"""The benchmark run's settings: what ``python -m compare.run`` parsed, shared by the CLI and the sweep."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from compare.spec import MODELS
from contract.peers import names as peer_names

QUICK_BATCH_SIZES = (32,)  # one batch, every method of both frameworks (~18 points of ~2-5 s each when idle)
FULL_BATCH_SIZES = (16, 32, 64, 128, 256, 512, 1024)
# --full on a GPU: up to 4096 and one beyond (8192: 39 GiB of float32 per-sample gradients), so the largest batch
# that fits is found; a point that runs out of memory is recorded ("oom") and the method's larger batches skipped.
FULL_GPU_BATCH_SIZES = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
# How points share processes (``--group-points``): "none" = one fresh process per point (CPU default: a point's
# RSS peak and thread pools are its own); "method" = one process per (framework, kind, method) running its batch
# sizes ascending (GPU default: CUDA context + imports cost seconds per process; torch's allocator peak is reset
# between points, JAX's cannot be: see compare.benchmark.point).
GROUPINGS = ("auto", "none", "method")
# Every point gets this environment (the parent's, plus these): the same for both frameworks, recorded in meta.
# "nonreleasing" keeps glibc from returning big buffers to the OS, so neither framework pays page faults on
# every call for its fresh output (see ../shared/FINDINGS.md); "system" leaves malloc as inherited.
MALLOC_ENV = {
    "nonreleasing": {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 40)},
    "system": {},
}


# ``--suite NAME``: a named study, i.e. presets for --model, --batch-sizes and --methods (explicit options win).
# "fast-dpsgd": the six workloads of the peer study (Subramani, Vadivelu & Kamath, NeurIPS 2021) at B = 16..256;
# per framework the non-private step, every private step (the best of which is reported), every peer step of
# contract.peers (Opacus' hooks-materialise and ghost steps; jax-privacy) and the fast per-sample methods (against
# the floor). loop, vmap_nojit, compile and Opacus' per-sample modes are left out: on the seed CNN (paper/cpu,
# --full) none of them is ever the fastest, and torch.compile alone would cost ~1 min of compilation per point on 2 cores.
SUITES: dict[str, dict[str, tuple]] = {
    "fast-dpsgd": {
        "models": tuple(MODELS),  # every registered workload
        "batch_sizes": (16, 32, 64, 128, 256),
        "methods": ("per_layer", "vmap", "vmap_patches", "sgd", "dp_sgd", "dp_ghost", "dp_bk", *peer_names(kind="dp")),
        # timing: >= 3 calls and >= 0.5 s per point; one process per (workload, framework, kind, method) running
        # its batch sizes ascending (~110 processes instead of ~540: start-up is most of a small workload's time)
        "repeats": 3, "min_seconds": 0.5, "timeout": 300.0, "group_points": "method",
        # on a CPU, wrn16_4 is timed at B = 16-64 only: one SGD step is ~150 GFLOP at B = 64 (2.3 GFLOP of
        # forward per example, x3 with the backward), so B = 128 / 256 would take minutes per point
        "cpu_batch_sizes": {"wrn16_4": (16, 32, 64)},
    },
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
    batch_sizes_given: bool = True  # False: the preset's, replaced by the GPU's on cuda
    group_points: str = "auto"  # one of GROUPINGS; "auto": "method" on cuda, "none" on cpu
    budget: float | None = None  # seconds for the whole sweep; points not started by then are recorded skipped
    agreement_only: bool = False  # run the agreement check, write DIR/agreement.json, no sweep
    agreement_file: Path | None = None  # an agreement.json (from --agreement-only) used instead of a new check
    devices: int | None = None  # --devices N: also time the data-parallel kind on N devices (batch sizes per device)
    models: tuple[str, ...] = ("seed_cnn",)  # --model: compare.spec.MODELS names, timed one after the other
    suite: str | None = None  # --suite: the SUITES preset this run used (recorded in meta)
    rounds: int = 15  # --rounds: minimum interleaved rounds of each pair group (compare.benchmark.paired)
    # {model: batch sizes} replacing ``batch_sizes`` for that workload on a CPU (a suite's ``cpu_batch_sizes``,
    # unless --batch-sizes was given)
    cpu_batch_sizes: tuple[tuple[str, tuple[int, ...]], ...] = ()

    def batch_sizes_of(self, model: str, device: str) -> tuple[int, ...]:
        """The batch sizes timed for ``model`` on ``device``."""
        return dict(self.cpu_batch_sizes).get(model, self.batch_sizes) if device == "cpu" else self.batch_sizes


def batch_sizes_for(full: bool, device: str) -> tuple[int, ...]:
    """The default batch sizes of a run without ``--batch-sizes``."""
    if not full:
        return QUICK_BATCH_SIZES
    return FULL_GPU_BATCH_SIZES if device.startswith("cuda") else FULL_BATCH_SIZES


def grouping_for(group_points: str, device: str) -> str:
    """"none" or "method" for this device (``--group-points auto`` resolved)."""
    if group_points not in GROUPINGS:
        raise ValueError(f"unknown grouping {group_points!r}; expected one of {GROUPINGS}")
    if group_points != "auto":
        return group_points
    return "method" if device.startswith("cuda") else "none"
