"""``python -m compare.train``: DP-SGD in both frameworks; the code lives in ``compare.training.cli``."""
import sys

from compare.training.cli import main

if __name__ == "__main__":
    sys.exit(main())
