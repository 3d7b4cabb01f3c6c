"""Checkpoints of ``compare.train``: a run killed at any point continues with ``--resume`` from its last
completed step and ends with the parameters of an uninterrupted run (float64: bitwise, tests/test_resume.py).

One file per framework, ``<run dir>/checkpoint/<framework>.safetensors`` (``contract.weights.save_state``,
written to a temp file, flushed and renamed over the old one: a crash at any moment leaves the previous
checkpoint or the new one, never a mix), after every ``--checkpoint-every`` K-th step and after the last. It
holds the whole state of the run:
- the parameters, canonical names and layouts, in the dtype they train in (float64 runs: float64);
- the completed step count, the losses and step times so far;
- the batch order's and the noise's generator states (``streams.Streams``);
- the accountant's history ``[(noise_multiplier, sample_rate, steps done)]`` (Opacus' format): the privacy
  spent so far; plain SGD has no optimizer state besides the parameters;
- what the run must share with the one that resumes it (``identity``): the configuration that decides the
  trajectory, the package versions, the world size (devices x processes) and a digest of the initial weights.
``check`` compares that identity before any step and refuses a difference in one line naming the field and both
values. The writer is the process that writes the progress file (rank / process 0); every replica of a resumed
data-parallel run reads the same file (on several hosts: a shared ``--out``).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from compare.lock import versions
from contract.weights import WeightsError, load_state, save_state

FOLDER = "checkpoint"
# Config fields that decide a run's trajectory (not: where it writes, which frameworks or workloads it runs
# now, timeouts, how often it checkpoints; the world size is its own field).
TRAJECTORY = ("epochs", "steps", "batch_size", "lr", "clip", "noise_multiplier", "delta", "data", "dtype", "device",
              "weights", "seed", "accountant", "clipping", "model")


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from here (one line naming why)."""


@dataclass(frozen=True)
class State:
    """A run after ``step`` completed steps (see the module doc)."""

    step: int
    params: dict[str, np.ndarray]
    losses: list[float]
    times: list[float]
    streams: dict
    identity: dict
    accountant: list = field(default_factory=list)


def path(out: Path, framework: str) -> Path:
    return Path(out) / FOLDER / f"{framework}.safetensors"


def digest(weights: dict[str, np.ndarray]) -> str:
    """sha256 of name-sorted arrays (name, dtype, shape, bytes), 16 hex digits."""
    h = hashlib.sha256()
    for k in sorted(weights):
        h.update(f"{k}:{weights[k].dtype}:{weights[k].shape}".encode())
        h.update(np.ascontiguousarray(weights[k]).tobytes())
    return h.hexdigest()[:16]


def identity(config: dict[str, Any], world: int, weights: dict[str, np.ndarray]) -> dict:
    """What a resumed run must share with the checkpoint: trajectory config, versions, world size, weights."""
    return {"config": {k: (str(config[k]) if isinstance(config[k], Path) else config[k]) for k in TRAJECTORY},
            "versions": versions(), "world": world, "weights": digest(weights)}


def save(out: Path, framework: str, state: State, model: str) -> Path:
    meta = {"step": state.step, "losses": state.losses, "times": state.times, "streams": state.streams,
            "identity": state.identity, "accountant": state.accountant, "framework": framework}
    return save_state(path(out, framework), state.params, {"checkpoint": json.dumps(meta)}, model=model)


def load(out: Path, framework: str, model: str) -> State | None:
    """The framework's checkpoint in ``out``, or None when there is none."""
    file = path(out, framework)
    if not file.exists():
        return None
    try:
        params, meta = load_state(file, model)
        m = json.loads(meta["checkpoint"])
    except (WeightsError, KeyError, ValueError) as err:
        raise CheckpointError(f"cannot --resume from {file}: {err}") from None
    return State(m["step"], params, m["losses"], m["times"], m["streams"], m["identity"], m["accountant"])


def _differences(saved: dict, now: dict) -> list[str]:
    out = []
    for key in ("config", "versions"):
        for name in sorted(set(saved[key]) | set(now[key])):
            if saved[key].get(name) != now[key].get(name):
                out.append(f"{name} {saved[key].get(name)!r} in the checkpoint, {now[key].get(name)!r} now")
    if saved["world"] != now["world"]:
        out.append(f"world size {saved['world']} in the checkpoint, {now['world']} now (devices x processes)")
    if saved["weights"] != now["weights"]:
        out.append(f"initial weights {saved['weights']} in the checkpoint, {now['weights']} now (digests)")
    return out


def check(out: Path, frameworks: tuple[str, ...], model: str, now: dict, steps: int) -> dict[str, State | None]:
    """Each framework's checkpoint in ``out`` (None: starts at step 0), refused in one line when the run here
    differs from the checkpointed one or when ``out`` holds no run to resume."""
    if not (Path(out) / "train_progress.jsonl").is_file():
        raise CheckpointError(f"cannot --resume: {out} holds no training run (no train_progress.jsonl); run "
                              "without --resume to start one")
    states = {fw: load(out, fw, model) for fw in frameworks}
    for fw, state in states.items():
        diff = [] if state is None else _differences(state.identity, now)
        if diff:
            raise CheckpointError(f"cannot --resume from {path(out, fw)}: this run differs from it: "
                                  + "; ".join(diff) + " (use a fresh --out, or run without --resume)")
        if state is not None and state.step > steps:
            raise CheckpointError(f"cannot --resume from {path(out, fw)}: it is at step {state.step} of {steps}")
    return states


@dataclass(frozen=True)
class Writer:
    """Saves the state after every ``every``-th completed step and after the last one (``steps``)."""

    out: Path
    framework: str
    model: str
    every: int
    steps: int
    identity: dict
    sample_rate: float
    noise_multiplier: float
    canonical: Callable[[Any], dict[str, np.ndarray]]

    def __call__(self, done: int, params: Any, losses: list[float], times: list[float], streams: dict) -> None:
        if done % self.every and done != self.steps:
            return
        accountant = [[self.noise_multiplier, self.sample_rate, done]]
        save(self.out, self.framework, State(done, self.canonical(params), list(losses), list(times), streams,
                                             self.identity, accountant), self.model)


def trim_progress(progress: Path, done: dict[str, int]) -> None:
    """Keep the progress lines a resumed run does not redo: the header lines, the lines of frameworks it does not
    run, and each resumed framework's steps below its checkpoint's (``done``: 0 without one); rewritten
    atomically."""
    kept = []
    for line in progress.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line cut by the kill
        fw = entry.get("framework") if isinstance(entry, dict) else None
        if fw not in done or entry.get("step", 0) < done[fw]:
            kept.append(line)
    kept.append(json.dumps({"resume": done}))
    tmp = progress.with_name(progress.name + ".tmp")
    tmp.write_text("\n".join(kept) + "\n")
    tmp.replace(progress)
