"""One figure and a table of ``compare.train --dtype float32`` against ``--dtype bfloat16`` over seeds.

Usage: python scripts/bf16_train_figure.py paper/cpu-bf16-train (the code: ``compare.training.dtypes``).
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from compare.training.dtypes import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
