"""``python -m compare.run``: the benchmark (agreement check + sweep + figures); the code lives in ``compare.benchmark.cli``."""
import sys

from compare.benchmark.cli import main

if __name__ == "__main__":
    sys.exit(main())
