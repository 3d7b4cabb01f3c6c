"""Data-parallel per-sample gradients and DP-SGD (``<fw>_impl.distributed``) equal the single-device ones.

torch: N gloo processes on localhost (``launch``); JAX: N host devices, which need XLA_FLAGS before JAX is
imported, so the JAX checks run in one subprocess (gathered per-sample gradients on meshes of 1, 2, 4 devices; DP
steps on 2 and 4). Each check runs once for many assertions: process start-up and XLA compilation dominate (about
70 s of CPU time for the file; 1 min 45 s wall while other jobs loaded the 2 cores). Batches of B=5 over N=2
or 4 devices exercise the masked padding. Tolerances: float64 1e-12 (the sums are only re-associated: per-device
partial sums, then the all-reduce; measured <= 4.4e-16 on losses, 1.1e-16 on params); float32 2e-5 absolute on
params and losses after two noisy steps of lr 0.5 (measured 6e-8). Clipping "bk" (the trainer's default) and
"materialize".
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from compare.frameworks import side
from contract.devices import DevicesError, check_count, cpu_max
from compare.spec import PARAM_SHAPES, make_batch
from compare.weights import init_weights

ROOT = Path(__file__).resolve().parents[1]
TOL = {"float64": 1e-12, "float32": 2e-5}
LR, CLIP, SIGMA = 0.5, 1.0, 0.8


def _noises(steps: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(3)
    return [{k: rng.standard_normal(s).astype(np.float32) for k, s in PARAM_SHAPES.items()} for _ in range(steps)]


def _max_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


# ------------------------------------------------------------------------------------------------ torch


def _torch_check(dtype: str, batch: int, steps: int, clipping: str = "materialize") -> dict:
    """On every rank: data-parallel vs this rank's own single-device computation of the whole batch."""
    from torch_impl import distributed as D, dp
    from torch_impl.per_sample import native_fn
    from torch_impl.weights import to_canonical, to_native

    params = to_native(init_weights(0), dtype)
    x, y = dp.native_batch(*make_batch(batch, 0), dtype=dtype)
    grads, mask = D.per_sample_grads(params, x, y)
    gathered = D.gather_per_sample(grads, mask)
    psg = _max_diff(gathered, to_canonical(native_fn("vmap")(params, x, y), batch_axis=True))
    hp = {"lr": LR, "clip": CLIP, "noise_multiplier": SIGMA, "clipping": clipping}
    step, ref_step = D.make_step(**hp), dp.make_step(**hp)
    p, ref, losses, ref_losses = params, params, [], []
    for z in _noises(steps):
        noise = dp.native_noise(z, dtype=dtype)
        p, loss = step(p, x, y, noise)
        ref, ref_loss = ref_step(ref, x, y, noise)
        losses.append(float(loss))
        ref_losses.append(float(ref_loss))
    return {"batch_seen": len(next(iter(gathered.values()))), "psg": psg,
            "params": _max_diff(to_canonical(p), to_canonical(ref)),
            "loss": float(np.abs(np.subtract(losses, ref_losses)).max()), "final": to_canonical(p)}


def _torch_checks() -> dict:
    return {"float64": _torch_check("float64", 5, 3, "bk"), "float32": _torch_check("float32", 4, 2)}


def test_torch_single_process_equals_dp_step() -> None:
    """Without a process group (N=1) the distributed step is the single-device step."""
    out = _torch_check("float64", 3, 2)
    assert out["batch_seen"] == 3
    assert out["psg"] == 0.0 and out["params"] <= TOL["float64"] and out["loss"] <= TOL["float64"]


def test_torch_two_processes_equal_single_device() -> None:
    from torch_impl.distributed import launch

    ranks = launch(_torch_checks, 2)
    for dtype in ("float64", "float32"):
        for out in ranks:
            assert out[dtype]["batch_seen"] == (5 if dtype == "float64" else 4)  # padding dropped on gather
            assert out[dtype]["psg"] <= TOL[dtype]
            assert out[dtype]["params"] <= TOL[dtype], dtype
            assert out[dtype]["loss"] <= TOL[dtype], dtype
        assert _max_diff(ranks[0][dtype]["final"], ranks[1][dtype]["final"]) == 0.0  # replicas identical


def _torch_fault(kind: str) -> None:
    import torch
    import torch.distributed as dist

    if dist.get_rank() == 1:
        if kind == "die":
            os._exit(3)
        time.sleep(60)  # hangs; launch ends it once the others have failed
    dist.all_reduce(torch.ones(4))


@pytest.mark.parametrize("kind", ["die", "hang"])
def test_torch_dead_or_hung_replica_fails_the_others_in_bounded_time(kind: str) -> None:
    from torch_impl.distributed import DistributedError, launch

    t0 = time.monotonic()
    with pytest.raises(DistributedError, match=r"replicas failed") as err:
        launch(_torch_fault, 2, kind, timeout_s=2.0)
    assert "rank 0" in str(err.value) and "rank 1" in str(err.value)  # rank 0 failed in its all-reduce
    assert time.monotonic() - t0 < 30  # a bound, not a timing claim: without the timeout this would hang


# ------------------------------------------------------------------------------------------------ jax


def _jax_checks() -> None:
    """Run in a subprocess with 4 host devices; prints a JSON dict of max differences."""
    import jax

    from jax_impl import distributed as D, dp
    from jax_impl.per_sample import native_fn
    from jax_impl.weights import to_canonical, to_native

    assert len(jax.devices()) >= 4, jax.devices()
    out, refs = {}, {}
    ref_step = dp.make_step(lr=LR, clip=CLIP, noise_multiplier=SIGMA, clipping="bk")
    for dtype, n, batch, steps in (("float64", 1, 5, 0), ("float64", 2, 5, 3), ("float64", 4, 5, 2),
                                   ("float32", 2, 4, 2)):
        mesh = D.make_mesh(n)
        params = to_native(init_weights(0), dtype)
        x, y = dp.native_batch(*make_batch(batch, 0), dtype=dtype)
        if (dtype, batch) not in refs:  # the single-device run: gradients and a 3-step trajectory, once
            ref, traj = params, []
            for z in _noises(3):
                ref, ref_loss = ref_step(ref, x, y, dp.native_noise(z, dtype=dtype))
                traj.append((to_canonical(ref), float(ref_loss)))
            refs[dtype, batch] = to_canonical(native_fn("vmap")(params, x, y), batch_axis=True), traj
        ref_g, traj = refs[dtype, batch]
        method = "per_layer" if n == 4 else "vmap"  # per_layer differentiates replicated zero probes: see D's doc
        grads, mask = D.per_sample_grads(params, x, y, mesh=mesh, method=method)
        gathered = D.gather_per_sample(grads, mask)
        step = D.make_step(mesh=mesh, lr=LR, clip=CLIP, noise_multiplier=SIGMA, clipping="bk")
        p, dl = params, 0.0
        for z, (ref, ref_loss) in zip(_noises(steps), traj):
            p, loss = step(p, x, y, dp.native_noise(z, dtype=dtype))
            dl = max(dl, abs(float(loss) - ref_loss))
        ref = traj[steps - 1][0] if steps else to_canonical(params)  # N = 1: gradients only (compile time)
        out[f"{dtype}/{n}"] = {"batch_seen": len(next(iter(gathered.values()))), "psg": _max_diff(gathered, ref_g),
                               "params": _max_diff(to_canonical(p), ref), "loss": dl,
                               "devices": len(grads["fc1"]["kernel"].sharding.device_set)}
    print("RESULT " + json.dumps(out))


def test_jax_mesh_of_1_2_4_devices_equals_single_device() -> None:
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
    code = "import test_distributed as t; t._jax_checks()"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT ", 1)[1])
    for key, r in out.items():
        dtype, n = key.split("/")
        assert r["devices"] == int(n) and r["batch_seen"] in (4, 5), (key, r)
        for what in ("psg", "params", "loss"):
            assert r[what] <= TOL[dtype], (key, what, r[what])


# ------------------------------------------------------------------------------------------------ devices


@pytest.mark.parametrize("bad", [0, -1])
def test_bad_device_counts_are_rejected(bad: int) -> None:
    with pytest.raises(DevicesError, match="positive"):
        check_count(bad)


def test_more_devices_than_available_is_rejected() -> None:
    with pytest.raises(DevicesError, match="available"):
        side("torch").check_devices(cpu_max() + 1, "cpu")
    import jax

    with pytest.raises(DevicesError, match="available"):
        side("jax").check_devices(len(jax.devices("cpu")) + 1, "cpu")


@pytest.mark.parametrize("devices", ["0", "-2", str(cpu_max() + 1)])
def test_train_rejects_bad_devices_before_any_work(devices: str, tmp_path: Path) -> None:
    from compare.training.cli import main

    out = tmp_path / "out"
    assert main(["--devices", devices, "--steps", "1", "--out", str(out)]) == 2
    assert not out.exists()  # nothing written: the check ran before any data was read


def test_train_clipping_choices_are_the_dp_modules() -> None:
    from compare.frameworks import impl_module
    from compare.training.cli import CLIPPINGS

    assert all(impl_module(fw, "dp").CLIPPINGS == CLIPPINGS for fw in ("torch", "jax"))


def test_benchmark_distributed_kind_is_planned_with_devices_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """compare.run --devices N sets DEVICES_ENV; the kind's points then record devices = N (here N = 1 in-process:
    the N = 2 torch lockstep path spawns processes, ~15 s, and was run by hand: see the report)."""
    from compare.benchmark.targets import DEVICES_ENV, TARGETS, prepare, sync_fn

    monkeypatch.delenv(DEVICES_ENV, raising=False)
    assert TARGETS["distributed"].methods("torch") == ()  # no --devices: nothing planned
    monkeypatch.setenv(DEVICES_ENV, "1")
    assert TARGETS["distributed"].methods("jax") == ("dist_per_sample", "dist_dp_materialize", "dist_dp_ghost",
                                                      "dist_dp_bk")
    assert TARGETS["distributed"].details("torch", "dist_dp_ghost")["devices"] == 1
    assert TARGETS["distributed"].details("torch", "dist_dp_ghost")["clipping"] == "ghost"
    fn, args = prepare("torch", "distributed", "dist_dp_bk", init_weights(0), 2, dtype="float32", device="cpu",
                       loss="nll_log_softmax")
    params, loss = sync_fn("torch", "cpu")(fn(*args))
    assert np.isfinite(float(loss)) and set(params) == set(PARAM_SHAPES)
    fn, args = prepare("torch", "distributed", "dist_dp_ghost", init_weights(0, "logreg"), 3, dtype="float32",
                       device="cpu", loss="nll_log_softmax", model="logreg")  # any workload
    params, loss = sync_fn("torch", "cpu")(fn(*args))
    assert np.isfinite(float(loss)) and set(params) == {"fc.weight", "fc.bias"}


def test_run_rejects_bad_devices() -> None:
    from compare.benchmark.cli import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--devices", "0"])
