"""Every workload data-parallel on 2 replicas equals one device in float64 to 1e-12 relative: per-sample gradients
and the DP step of every clipping strategy (materialize, ghost, bk), in both frameworks (tests/dist_checks.py).

B = 4 over 2 replicas (B = 5 for logreg: a masked padding example). torch: 2 gloo processes (``launch``); JAX: 2
host devices, which need XLA_FLAGS before JAX is imported, so its checks run in one subprocess. The LSTM and
transformer run as the small variants of tests/test_lstm.py / tests/test_transformer.py; the registered
cifar10_cnn, lstm and transformer and the remaining small ones are slow (the whole file took 10 min on 2 shared
cores: per-sample work and, for JAX, compiling 8 functions per workload).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-12
FAST = ["logreg", "embed", "lstm_small"]  # a linear model, token inputs, a recurrent layer: ~1 min per framework
SLOW = ["ffnn", "mnist_cnn", "transformer_small", "cifar10_cnn", "lstm", "transformer"]


def _batch(name: str) -> int:
    return 5 if name == "logreg" else 4


def _torch(names: list[str]) -> list[dict]:
    from torch_impl.launch import launch

    return launch(_torch_all, 2, names)


def _torch_all(names: list[str]) -> dict:
    import dist_checks

    return {k: v for name in names for k, v in dist_checks.torch_checks([name], _batch(name)).items()}


def _jax(names: list[str]) -> list[dict]:
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_ENABLE_X64="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
    code = ("import json, dist_checks as d, test_distributed_workloads as t; "
            f"print('RESULT', json.dumps([d.jax_checks([n], t._batch(n), 2) for n in {names!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.split("RESULT ", 1)[1])


def _assert_equal(results: list[dict], names: list[str]) -> None:
    seen = set()
    for result in results:
        for name, diffs in result.items():
            seen.add(name)
            assert set(diffs) == {"per_sample", "materialize", "ghost", "bk"}, diffs
            bad = {k: f"{v:.1e}" for k, v in diffs.items() if not v <= TOL}
            assert not bad, f"{name}: 2 replicas differ from one device by more than {TOL:g}: {bad}"
    assert seen == set(names)


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_every_workload_and_strategy_equals_one_device(framework: str) -> None:
    _assert_equal(_torch(FAST) if framework == "torch" else _jax(FAST), FAST)


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_large_workloads_equal_one_device(framework: str) -> None:
    _assert_equal(_torch(SLOW) if framework == "torch" else _jax(SLOW), SLOW)
