"""Path arguments shared by every command line: one clear line instead of a traceback, before any work.

``output_dir`` (``--out``) and ``input_file`` (``--weights``, ``--agreement-file``, ...) are argparse ``type=``
functions: argparse turns their ``ArgumentTypeError`` into one usage line and exit status 2, so a bad path fails
at parse time, before a weights file is created, the agreement check runs or a sweep point starts.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path


def _probe_writable(parent: Path, value: str) -> None:
    """Create and remove a directory in ``parent``: the only check that also catches special file systems
    (``/proc``, ``/sys``) and read-only mounts, where ``os.access`` says yes to root."""
    try:
        probe = tempfile.mkdtemp(prefix=".write-check-", dir=parent)
    except OSError as err:
        raise argparse.ArgumentTypeError(
            f"{value!r}: cannot create a directory in {str(parent)!r} ({err.strerror or err})") from None
    shutil.rmtree(probe, ignore_errors=True)


def output_dir(value: str) -> Path:
    """argparse ``type=`` for an output directory: it may exist (as a directory) or be creatable.

    Rejects an empty name (it would mean the current directory), a path that is an existing file or lies under
    one, and a place where no directory can be created (permissions, ``/proc``, a read-only mount), so that
    ``--out results.json`` fails at parse time instead of after the agreement check or a first sweep point.
    """
    if not value.strip():
        raise argparse.ArgumentTypeError("the output directory is empty: name a directory (e.g. results/)")
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
    _probe_writable(parent, value)
    return path


def input_file(value: str) -> Path:
    """argparse ``type=`` for a file to read: it must exist, be a regular file (not a directory) and readable."""
    if not value.strip():
        raise argparse.ArgumentTypeError("the file name is empty")
    path = Path(value)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{value!r} is a directory, not a file")
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{value!r}: no such file")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{value!r} is not a regular file")
    if not os.access(path, os.R_OK):
        raise argparse.ArgumentTypeError(f"{value!r}: cannot read it (permission denied)")
    return path


def output_file(value: str) -> Path:
    """argparse ``type=`` for a file to write (e.g. ``compare.profile --json``): not a directory, and its
    directory exists or can be created."""
    if not value.strip():
        raise argparse.ArgumentTypeError("the file name is empty")
    path = Path(value)
    if path.is_dir() or value.endswith(os.sep):
        raise argparse.ArgumentTypeError(f"{value!r} is a directory; name a file")
    output_dir(str(path.parent))
    return path
