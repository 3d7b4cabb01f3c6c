"""Registry of the two implementations: name -> module, imported lazily so neither framework loads unasked."""
from __future__ import annotations

import importlib
from types import ModuleType

FRAMEWORKS: tuple[str, ...] = ("torch", "jax")
_PACKAGES = {"torch": "torch_impl", "jax": "jax_impl"}


def per_sample_module(framework: str) -> ModuleType:
    """``torch_impl.per_sample`` or ``jax_impl.per_sample``: same public API (``METHODS``, ``per_sample_grads``...)."""
    if framework not in _PACKAGES:
        raise ValueError(f"unknown framework {framework!r}; expected one of {FRAMEWORKS}")
    return importlib.import_module(f"{_PACKAGES[framework]}.per_sample")


def impl_module(framework: str, name: str) -> ModuleType:
    """``<framework>_impl.<name>`` for the mirrored modules (model, weights, per_sample, dp, ...)."""
    if framework not in _PACKAGES:
        raise ValueError(f"unknown framework {framework!r}; expected one of {FRAMEWORKS}")
    return importlib.import_module(f"{_PACKAGES[framework]}.{name}")


def applicable_methods(framework: str, model: object = "seed_cnn") -> dict[str, str | None]:
    """{method: None if it applies to the workload ``model`` on ``framework``, else why not} (issue 15: a method
    that cannot apply is reported with its reason, never silently dropped)."""
    return per_sample_module(framework).applicable_methods(model)
