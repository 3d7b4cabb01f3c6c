"""The two seeded streams of a training run, with their state, so a resumed run continues them exactly.

``BatchOrder``: fixed-size batches of a fresh seeded shuffle each epoch (remainder dropped), numpy
``default_rng(seed)``. ``NoiseStream``: one canonical float32 standard normal draw per step, numpy
``default_rng([seed, 1])`` (independent of the batch order), shared by both frameworks and every replica.
``state()`` is plain JSON (the generator's ``bit_generator.state`` and the current epoch's order), so a checkpoint
stores it as text; ``restore`` continues the stream where it stopped: the draws after a restore are the ones an
uninterrupted stream would have made (tests/test_resume.py).
"""
from __future__ import annotations

import numpy as np

from compare.spec import MODELS


class BatchOrder:
    """``next()``: the next batch of ``batch_size`` indices into ``n`` examples (``1 <= batch_size <= n``)."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size, self.per_epoch = n, batch_size, n // batch_size
        self.rng = np.random.default_rng(seed)
        self.step = 0
        self.order: np.ndarray | None = None

    def next(self) -> np.ndarray:
        if self.step % self.per_epoch == 0:
            self.order = self.rng.permutation(self.n)
        start = (self.step % self.per_epoch) * self.batch_size
        self.step += 1
        assert self.order is not None
        return self.order[start : start + self.batch_size]

    def state(self) -> dict:
        return {"step": self.step, "rng": self.rng.bit_generator.state,
                "order": None if self.order is None else self.order.tolist()}

    def restore(self, state: dict) -> None:
        self.step = int(state["step"])
        self.rng.bit_generator.state = state["rng"]
        self.order = None if state["order"] is None else np.asarray(state["order"], dtype=np.int64)


class NoiseStream:
    """``next()``: the next step's draw ``{name: float32 array of the parameter's canonical shape}``, or None
    without noise (``noise_multiplier == 0``: nothing is drawn)."""

    def __init__(self, seed: int, noise_multiplier: float, model: str) -> None:
        self.rng = np.random.default_rng([seed, 1])
        self.shapes = None if noise_multiplier == 0 else MODELS[model].param_shapes

    def next(self) -> dict[str, np.ndarray] | None:
        if self.shapes is None:
            return None
        return {k: self.rng.standard_normal(s, dtype=np.float32) for k, s in self.shapes.items()}

    def state(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def restore(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]


class Streams:
    """A run's batch order and noise together: ``next() -> (indices, noise draw or None)``."""

    def __init__(self, n: int, batch_size: int, seed: int, noise_multiplier: float, model: str) -> None:
        self.batches = BatchOrder(n, batch_size, seed)
        self.noise = NoiseStream(seed, noise_multiplier, model)

    def next(self) -> tuple[np.ndarray, dict[str, np.ndarray] | None]:
        return self.batches.next(), self.noise.next()

    def state(self) -> dict:
        return {"batches": self.batches.state(), "noise": self.noise.state()}

    def restore(self, state: dict) -> None:
        self.batches.restore(state["batches"])
        self.noise.restore(state["noise"])
