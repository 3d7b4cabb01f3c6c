"""``--out DIR`` checks shared by every command line: one clear line instead of a traceback, before any work."""
from __future__ import annotations

import argparse
import os
from pathlib import Path


def output_dir(value: str) -> Path:
    """argparse ``type=`` for an output directory: it may exist (as a directory) or be creatable.

    Rejects a path that is an existing file, or that lies under one, or under a directory that cannot be written,
    so that ``--out results.json`` fails at parse time instead of after the agreement check or a first sweep point.
    """
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{value!r} exists and is not a directory (name a directory for the results)")
    parent = path
    while not parent.exists():  # the nearest existing ancestor must be a writable directory
        parent = parent.parent
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"{value!r}: {str(parent)!r} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{value!r}: cannot create or write in {str(parent)!r} (permission denied)")
    return path
