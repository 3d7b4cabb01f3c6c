"""Root conftest: the literal ``pytest --benchmark`` flag.

pytest-benchmark only defines ``--benchmark-*`` options (and runs every test that uses its fixture by default),
so pytest rejects a bare ``--benchmark``. Here ``--benchmark`` runs the benchmark suite in tests/benchmarks/
alone (every other test deselected); without it the suite is skipped, so plain ``pytest`` stays the fast
correctness run. pytest-benchmark's own ``--benchmark-only`` also enables the suite; its ``--benchmark-skip``
still skips it, and ``--benchmark-json PATH`` output is accepted by ``python -m compare.benchmark.figures PATH``.
"""
from __future__ import annotations

from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parent / "tests" / "benchmarks"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("per-sample gradient benchmarks")
    group.addoption("--benchmark", action="store_true",
                    help="run the benchmark suite (tests/benchmarks) instead of the correctness tests")
    group.addoption("--bench-batch-sizes", default="16,64", help="comma-separated batch sizes (default 16,64)")
    group.addoption("--bench-rounds", type=int, default=5, help="timed rounds per benchmark (default 5)")
    group.addoption("--bench-pair-rounds", type=int, default=15,
                    help="interleaved rounds of each pair group (tests/benchmarks/test_pairs.py; default 15)")
    group.addoption("--bench-device", choices=("cpu", "cuda"), default=None,
                    help="default: cuda when torch sees a GPU, else cpu")
    group.addoption("--model", default="seed_cnn", help="workload(s) of the benchmark suite: NAME[,NAME...] or "
                    "'all' (compare.spec.MODELS; default seed_cnn)")


def pytest_configure(config: pytest.Config) -> None:
    """A bad ``--model`` is one usage error before anything is collected."""
    from compare.spec import InputError, parse_models

    try:
        parse_models(config.getoption("model"))
    except InputError as err:
        raise pytest.UsageError(f"--model: {err}") from None


def benchmarks_enabled(config: pytest.Config) -> bool:
    return bool(config.getoption("benchmark") or config.getoption("benchmark_only", default=False))


def _in_suite(item: pytest.Item) -> bool:
    return BENCH_DIR in Path(item.path).resolve().parents


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if benchmarks_enabled(config):
        deselected = [i for i in items if not _in_suite(i)]
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            items[:] = [i for i in items if _in_suite(i)]
        return
    skip = pytest.mark.skip(reason="timing benchmark: run it with `pytest --benchmark`")
    for item in items:
        if _in_suite(item):
            item.add_marker(skip)
