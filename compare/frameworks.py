"""The two framework sides by name: ``side("torch")`` is ``torch_impl.api``, ``side("jax")`` is ``jax_impl.api``,
each a ``contract.interface.FrameworkSide``. The harness reaches a side only through here (pinned by
``tests/test_imports.py``); neither framework is imported until a side is asked for."""
from __future__ import annotations

import importlib
from types import ModuleType

from contract.interface import FrameworkSide

FRAMEWORKS: tuple[str, ...] = ("torch", "jax")
_PACKAGES = {"torch": "torch_impl", "jax": "jax_impl"}


def _package(framework: str) -> str:
    if framework not in _PACKAGES:
        raise ValueError(f"unknown framework {framework!r}; expected one of {FRAMEWORKS}")
    return _PACKAGES[framework]


def side(framework: str) -> FrameworkSide:
    """The side's interface module (names: ``contract.interface.EXPORTS``)."""
    return importlib.import_module(f"{_package(framework)}.api")  # type: ignore[return-value]


def impl_module(framework: str, name: str) -> ModuleType:
    """``<framework>_impl.<name>``, any mirrored module: for tests that study a side's internals (the harness and
    the experiments under scripts/ use ``side``; pinned by tests/test_imports.py)."""
    return importlib.import_module(f"{_package(framework)}.{name}")


def per_sample_module(framework: str) -> ModuleType:
    """``<framework>_impl.per_sample`` (tests; the harness and scripts/ use ``side``)."""
    return impl_module(framework, "per_sample")


def applicable_methods(framework: str, model: object = "seed_cnn") -> dict[str, str | None]:
    """{method: None if it applies to the workload ``model`` on ``framework``, else why not}: a method that
    cannot apply is reported with its reason, never silently dropped."""
    return side(framework).applicable_methods(model)
