"""This side's peer steps: a registered peer (``contract.peers``) built from the module of this package that
defines its factory, with its recorded settings; the harness asks through ``make_peer_step``."""
from __future__ import annotations

import importlib
from typing import Any, Callable

from contract.peers import peer

FRAMEWORK = "jax"


def make_peer_step(name: str, **options: Any) -> Callable[..., Any]:
    """``factory(**options, **settings named in kwargs) -> step(params, x, y, noise)`` for the dp peer ``name``.

    options: lr, clip, noise_multiplier, loss, model, dtype. A peer whose library is not installed raises ImportError
    naming it (from its factory, before any work)."""
    entry = peer(name)
    if entry.framework != FRAMEWORK or entry.kind != "dp":
        raise ValueError(f"{name!r} is a {entry.framework} {entry.kind} peer, not a {FRAMEWORK} dp step")
    factory = entry.factory if callable(entry.factory) else getattr(
        importlib.import_module(f"{__package__}.{entry.module}"), entry.factory)
    return factory(**options, **{k: entry.settings[k] for k in entry.kwargs})
