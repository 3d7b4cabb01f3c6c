"""``python -m compare.figures``: redraw the figures from a results file; the code lives in ``compare.benchmark.figures``."""
import sys

from compare.benchmark.figures import main

if __name__ == "__main__":
    sys.exit(main())
