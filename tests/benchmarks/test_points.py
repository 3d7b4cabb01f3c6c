"""The benchmark suite of ``pytest --benchmark``: framework x (kind, method) x batch size, grouped per batch.

Each benchmark times exactly what ``compare.run`` times (``compare.benchmark.targets.prepare`` builds the native callable
and its on-device inputs; ``sync_fn`` makes the clock wait for the result), with ``benchmark.pedantic``: one
warm-up round (compilation happens there), then ``--bench-rounds`` timed rounds of one call. Unlike
``compare.run``, all points share this one process; use ``compare.run`` for the paper numbers. ``--model``
picks the workload(s) (default seed_cnn); groups are ``<model> B=<B>``; a method that cannot apply to a workload
is skipped with the reason (``compare.benchmark.targets.not_applicable``); ``--dtype`` the compute dtype.
"""
from __future__ import annotations

import pytest

from functools import lru_cache

from compare.benchmark.targets import TARGETS, not_applicable, prepare, sync_fn
from compare.frameworks import FRAMEWORKS
from compare.lock import versions
from compare.spec import DEFAULT_LOSS, parse_models
from compare.weights import init_weights


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "point" not in metafunc.fixturenames:
        return
    sizes = [int(s) for s in metafunc.config.getoption("bench_batch_sizes").split(",") if s.strip()]
    models = parse_models(metafunc.config.getoption("model"))
    points = [(model, fw, kind, m, b) for model in models for b in sizes for fw in FRAMEWORKS
              for kind, tgt in TARGETS.items() for m in tgt.methods(fw)]
    metafunc.parametrize("point", points, ids=[f"{model}-{fw}-{m}-B{b}" for model, fw, _, m, b in points])


@lru_cache(maxsize=None)
def model_weights(model: str) -> dict:
    """Each workload's seed-0 weights, made once per session."""
    return init_weights(0, model=model)


@pytest.fixture(scope="session")
def device(request: pytest.FixtureRequest) -> str:
    from compare.benchmark.cli import resolve_device

    return resolve_device(request.config.getoption("bench_device"))


def test_point(benchmark, point: tuple[str, str, str, str, int], device: str, request: pytest.FixtureRequest) -> None:
    model, framework, kind, method, batch_size = point
    reason = not_applicable(framework, kind, method, model)
    if reason is not None:
        pytest.skip(f"{model}: {reason}")
    dtype = request.config.getoption("dtype")
    fn, args = prepare(framework, kind, method, model_weights(model), batch_size, dtype=dtype, device=device,
                       loss=DEFAULT_LOSS, model=model)
    sync = sync_fn(framework, device)
    benchmark.group = f"{model} B={batch_size}"
    benchmark.extra_info.update(model=model, framework=framework, kind=kind, method=method, batch_size=batch_size,
                                dtype=dtype, device=device, versions=versions())
    out = benchmark.pedantic(lambda: sync(fn(*args)), rounds=request.config.getoption("bench_rounds"),
                             iterations=1, warmup_rounds=1)
    assert out is not None  # the timed call produced a result (a failing method raises before this)
