"""List arguments shared by every command line (``--frameworks``, ``--batch-sizes``, ``--methods``, ...).

One syntax everywhere: comma-separated (``--frameworks torch,jax``); options that took space-separated values
(``compare.train --frameworks torch jax``) keep taking them, and the two can mix. An empty entry
(``32,,64``, ``torch,``) is an error, not something to skip: it is usually a typo for a missing value.
"""
from __future__ import annotations

import argparse
from typing import Callable, Sequence


def split_csv(text: str) -> list[str]:
    """The entries of ``text``, stripped; ``ArgumentTypeError`` for an empty list or an empty entry."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a comma-separated list, got an empty value")
    items = [t.strip() for t in text.split(",")]
    if any(not t for t in items):
        raise argparse.ArgumentTypeError(f"empty entry in {text!r} (two commas in a row, or a comma at an end)")
    return items


def csv_list(kind: Callable[[str], object] = str, choices: Sequence[str] | None = None,
             positive: bool = False) -> Callable[[str], tuple]:
    """argparse ``type=``: ``"a,b"`` -> ``(kind(a), kind(b))``, each checked against ``choices`` / ``> 0``."""
    def parse(text: str) -> tuple:
        items = []
        for t in split_csv(text):
            try:
                items.append(kind(t))
            except ValueError:
                raise argparse.ArgumentTypeError(f"{t!r} in {text!r} is not a valid {kind.__name__}") from None
        bad = [i for i in items if choices is not None and i not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {', '.join(map(str, bad))}; expected some of "
                                             f"{', '.join(choices)}")
        if positive and min(items) < 1:
            raise argparse.ArgumentTypeError(f"every value must be a positive integer, got {text!r}")
        return tuple(items)
    return parse


class ExtendUnique(argparse.Action):
    """``nargs="+"`` with a ``csv_list`` type: ``--x a,b c`` -> ``(a, b, c)``, duplicates dropped, order kept."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        flat = [v for group in values for v in group]  # type: ignore[union-attr]
        setattr(namespace, self.dest, tuple(dict.fromkeys(flat)))


def models_arg(text: str) -> tuple[str, ...]:
    """argparse ``type=`` for ``--model NAME[,NAME...]|all``: an empty entry or an unknown name is one usage line."""
    from compare.spec import InputError, parse_models

    split_csv(text)
    try:
        return parse_models(text)
    except InputError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
