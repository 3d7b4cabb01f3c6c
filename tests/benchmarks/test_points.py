"""The benchmark suite of ``pytest --benchmark``: framework x (kind, method) x batch size, grouped per batch.

Each benchmark times exactly what ``compare.run`` times (``compare.benchmark.targets.prepare`` builds the native callable
and its on-device inputs; ``sync_fn`` makes the clock wait for the result), with ``benchmark.pedantic``: one
warm-up round (compilation happens there), then ``--bench-rounds`` timed rounds of one call. Unlike
``compare.run``, all points share this one process; use ``compare.run`` for the paper numbers.
"""
from __future__ import annotations

import pytest

from compare.benchmark.targets import TARGETS, prepare, sync_fn
from compare.frameworks import FRAMEWORKS
from compare.benchmark.results import versions
from compare.spec import DEFAULT_LOSS

DTYPE = "float32"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "point" not in metafunc.fixturenames:
        return
    sizes = [int(s) for s in metafunc.config.getoption("bench_batch_sizes").split(",") if s.strip()]
    points = [(fw, kind, m, b) for b in sizes for fw in FRAMEWORKS for kind, tgt in TARGETS.items()
              for m in tgt.methods(fw)]
    metafunc.parametrize("point", points, ids=[f"{fw}-{m}-B{b}" for fw, _, m, b in points])


@pytest.fixture(scope="session")
def device(request: pytest.FixtureRequest) -> str:
    from compare.benchmark.cli import resolve_device

    return resolve_device(request.config.getoption("bench_device"))


def test_point(benchmark, point: tuple[str, str, str, int], weights: dict, device: str,
               request: pytest.FixtureRequest) -> None:
    framework, kind, method, batch_size = point
    fn, args = prepare(framework, kind, method, weights, batch_size, dtype=DTYPE, device=device, loss=DEFAULT_LOSS)
    sync = sync_fn(framework, device)
    benchmark.group = f"B={batch_size}"
    benchmark.extra_info.update(framework=framework, kind=kind, method=method, batch_size=batch_size, dtype=DTYPE,
                                device=device, versions=versions())
    out = benchmark.pedantic(lambda: sync(fn(*args)), rounds=request.config.getoption("bench_rounds"),
                             iterations=1, warmup_rounds=1)
    assert out is not None  # the timed call produced a result (a failing method raises before this)
