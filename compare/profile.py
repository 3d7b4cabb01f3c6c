"""``python -m compare.profile``: where one method spends its time; the code lives in ``compare.benchmark.profile``."""
import sys

from compare.benchmark.profile import main

if __name__ == "__main__":
    sys.exit(main())
