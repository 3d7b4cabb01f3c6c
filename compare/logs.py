"""Logging of every command line: the harness's own INFO lines, the frameworks' start-up noise left out.

The root logger stays at WARNING, so libraries' INFO lines (JAX's "Unable to initialize backend 'tpu'" and
"'proxy'", matplotlib's font cache) are not printed; ``compare.*`` logs at INFO. ``QUIET`` loggers print errors
only: torch's "No CUDA runtime is found, using CUDA_HOME=..." warning (``torch.utils.cpp_extension``, imported
with ``torch.compile``) says nothing about a CPU run.
"""
from __future__ import annotations

import logging

FORMAT = "%(levelname)s %(name)s: %(message)s"
QUIET: tuple[str, ...] = ("torch.utils.cpp_extension",)


def setup_logging(level: int = logging.INFO) -> None:
    """Root at WARNING, ``compare`` at ``level``, ``QUIET`` at ERROR; call before the frameworks are imported."""
    logging.basicConfig(level=logging.WARNING, format=FORMAT)
    logging.getLogger("compare").setLevel(level)
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.ERROR)
