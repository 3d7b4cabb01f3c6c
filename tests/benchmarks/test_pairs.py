"""The ratios of ``pytest --benchmark``: each method and its baselines timed as one pair group, interleaved.

One benchmark per (workload, framework, batch size, family): ``dp`` (sgd, every private step, the peer) and
``grad`` (the batched reference and every per-sample method), measured with the protocol ``compare.run`` uses
(``compare.benchmark.pair.measure_group``: warm-up and compilation of every member first, then ``--bench-pair-
rounds`` interleaved rounds in shuffled order). Every member's rounds and each ratio with its bootstrap 95%
interval and goal verdict go to ``extra_info["records"]`` (``--benchmark-json``); the lines are printed with
``-s``. pytest-benchmark's own statistics of these entries time the whole group, not a method.
"""
from __future__ import annotations

import pytest

from compare.benchmark.pair import BASELINE, attach, measure_group
from compare.benchmark.point import PointSpec
from compare.lock import versions
from compare.benchmark.summary import warning_line
from compare.benchmark.targets import TARGETS, not_applicable
from compare.frameworks import FRAMEWORKS, per_sample_module
from compare.spec import DEFAULT_LOSS, parse_models
from compare.weights import init_weights, save_weights

DTYPE = "float32"
FAMILIES = {"dp": ("dp",), "grad": ("reference", "per_sample")}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "group" not in metafunc.fixturenames:
        return
    sizes = [int(s) for s in metafunc.config.getoption("bench_batch_sizes").split(",") if s.strip()]
    models = parse_models(metafunc.config.getoption("model"))
    groups = [(m, fw, b, fam) for m in models for b in sizes for fw in FRAMEWORKS for fam in FAMILIES]
    metafunc.parametrize("group", groups, ids=[f"{m}-{fw}-B{b}-{fam}" for m, fw, b, fam in groups])


@pytest.fixture(scope="session")
def weights_files(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return {}, tmp_path_factory.mktemp("weights")


def _weights(cache: tuple[dict, object], model: str) -> str:
    files, root = cache
    if model not in files:
        files[model] = str(save_weights(root / f"{model}.safetensors", init_weights(0, model=model), model=model))
    return files[model]


def _members(framework: str, family: str, model: str) -> list[tuple[str, str]]:
    missing = per_sample_module(framework).MISSING
    return [(kind, m) for kind in FAMILIES[family] for m in TARGETS[kind].methods(framework)
            if m not in missing and not_applicable(framework, kind, m, model) is None]


def test_pair_group(benchmark, group: tuple[str, str, int, str], weights_files, request: pytest.FixtureRequest,
                    ) -> None:
    from compare.benchmark.cli import resolve_device

    model, framework, batch_size, family = group
    device = resolve_device(request.config.getoption("bench_device"))
    specs = [PointSpec(framework=framework, kind=kind, method=m, batch_size=batch_size, dtype=DTYPE, device=device,
                       loss=DEFAULT_LOSS, weights=_weights(weights_files, model), model=model)
             for kind, m in _members(framework, family, model)]
    rounds = request.config.getoption("bench_pair_rounds")
    result = benchmark.pedantic(lambda: measure_group(specs, rounds, 0.0, 0), rounds=1, iterations=1)
    records = {s.method: {"framework": framework, "kind": s.kind, "method": s.method, "batch_size": batch_size,
                          "model": model, "median_ms": None} for s in specs}
    attach(records, result, group_id=f"{model}/{framework}/B={batch_size}/{family}")
    benchmark.group = f"pairs {model} B={batch_size}"
    benchmark.extra_info.update(pair_group=f"{model}/{framework}/B={batch_size}/{family}", versions=versions(),
                                records=list(records.values()))
    for r in records.values():
        for base, e in (r.get("ratios") or {}).items():
            lo, hi = e["ci95"]
            print(f"{model} {framework} B={batch_size}: {r['method']} / {base} = {e['median']:.2f}x "
                  f"[{lo:.2f}, {hi:.2f}] {e.get('verdict', '')}")
    warn = warning_line(list(records.values()), rounds, flag="--bench-pair-rounds")
    if warn:
        print(warn)
    base = records[BASELINE[family]]
    assert base.get("rounds_ms"), f"the baseline {BASELINE[family]} was not timed: {base.get('warnings')}"
