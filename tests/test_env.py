"""CPU checks of the GPU plumbing: the env report, one-line errors for ``--device cuda`` without a GPU, the
memory setting shared by processes that hold both frameworks, TF32 flags, the one-CUDA-stack rule, and how the
sweep plans and groups points on a GPU. Nothing here needs a GPU (tests/test_gpu.py has the ones that do)."""
from __future__ import annotations

import json
import logging

import pytest
import torch

from compare import env
from compare.benchmark.cli import main as run_main, parse_args
from compare.benchmark.config import FULL_BATCH_SIZES, FULL_GPU_BATCH_SIZES, batch_sizes_for, grouping_for
from compare.benchmark.point import PointSpec, run_group
from compare.benchmark.sweep import _skip_reason, plan_points
from compare.spec import DeviceError
from compare.weights import init_weights, save_weights

HAS_TORCH_GPU = torch.cuda.is_available()
cpu_only = pytest.mark.skipif(HAS_TORCH_GPU, reason="checks the no-GPU error; this machine has a GPU")


def test_report_on_cpu_text_and_json(capsys):
    assert env.main([]) == 0
    text = capsys.readouterr().out
    assert f"torch    {torch.__version__}" in text and "jax      " in text and "memory   " in text
    assert env.main(["--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["torch"]["version"] == torch.__version__ and rep["torch"]["devices"][0] == "cpu"
    assert "cpu" in rep["jax"]["default_backend"] or rep["jax"]["gpus"]
    assert set(rep["torch"]["precision"]) == {"matmul.allow_tf32", "cudnn.allow_tf32", "float32_matmul_precision"}
    assert rep["memory_settings"]["XLA_PYTHON_CLIENT_PREALLOCATE"]  # set (or the user's value) in every report


@cpu_only
def test_env_device_cuda_without_gpu_is_one_line_naming_both_frameworks(capsys):
    assert env.main(["--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "torch" in err and "JAX" in err and "Traceback" not in err


@cpu_only
@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_resolve_device_cuda_without_gpu_raises_device_error(framework):
    from compare.frameworks import impl_module

    with pytest.raises(DeviceError, match="device='cuda' requested") as info:
        impl_module(framework, "weights").resolve_device("cuda")
    assert "\n" not in str(info.value)
    with pytest.raises(DeviceError):  # the same through the public API, before any work
        impl_module(framework, "per_sample").native_inputs(init_weights(0), *_batch(2), device="gpu")


def _batch(b: int):
    from compare.spec import make_batch

    return make_batch(b, 0)


@cpu_only
def test_compare_run_device_cuda_without_gpu_exits_2_with_one_line(tmp_path, caplog):
    with caplog.at_level(logging.ERROR):
        assert run_main(["--device", "cuda", "--batch-sizes", "2", "--out", str(tmp_path)]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "--device cuda" in errors[0] and "torch" in errors[0] and "JAX" in errors[0]
    assert not (tmp_path / "results.json").exists()


def test_share_gpu_memory_sets_preallocation_off_unless_the_user_chose():
    fresh = {"PATH": "/bin"}
    assert env.share_gpu_memory(fresh) == {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    assert fresh["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    chosen = {"XLA_PYTHON_CLIENT_PREALLOCATE": "true", "XLA_PYTHON_CLIENT_MEM_FRACTION": ".5",
              "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True", "MALLOC_MMAP_MAX_": "0", "HOME": "/root"}
    assert env.share_gpu_memory(chosen) == {k: v for k, v in chosen.items() if k != "HOME"}


def test_cuda_stack_rule_is_plugin_major_equals_torch_cuda_major():
    torch13, cpu = {"cuda_version": "13.0"}, {"cuda_version": None}
    assert env.cuda_stack(torch13, {"plugins": {"jax-cuda13-plugin": "0.10.2", "jax-cuda13-pjrt": "0.10.2"}})["ok"]
    mismatch = env.cuda_stack(torch13, {"plugins": {"jax-cuda12-plugin": "0.10.2"}})
    assert mismatch["ok"] is False and "jax[cuda13]" in mismatch["note"]
    assert env.cuda_stack(torch13, {"plugins": {"jax-cuda12-plugin": "1", "jax-cuda13-plugin": "1"}})["ok"] is False
    assert env.cuda_stack(cpu, {"plugins": {}})["ok"] is None


@pytest.fixture
def tf32_restored():
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.get_float32_matmul_precision())
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
    torch.set_float32_matmul_precision(saved[2])


def test_resolving_cuda_turns_tf32_off(monkeypatch, tf32_restored):
    from torch_impl import weights

    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    torch.set_float32_matmul_precision("high")
    assert weights.resolve_device("cpu").type == "cpu" and torch.backends.cudnn.allow_tf32  # cpu: untouched
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # torch.device("cuda") needs no GPU
    assert weights.resolve_device("cuda").type == "cuda"
    assert weights.precision_flags() == {"matmul.allow_tf32": False, "cudnn.allow_tf32": False,
                                         "float32_matmul_precision": "highest"}


def test_gpu_presets_and_grouping():
    assert batch_sizes_for(True, "cuda") == FULL_GPU_BATCH_SIZES and max(FULL_GPU_BATCH_SIZES) >= 4096
    assert batch_sizes_for(True, "cpu") == FULL_BATCH_SIZES
    assert grouping_for("auto", "cuda") == "method" and grouping_for("auto", "cpu") == "none"
    cfg = parse_args(["--full", "--device", "cuda"])
    assert cfg.batch_sizes == FULL_GPU_BATCH_SIZES and not cfg.batch_sizes_given
    with pytest.raises(SystemExit):
        parse_args(["--agreement-only", "--no-agreement"])


def test_gpu_plan_adds_cudagraphs_groups_by_method_and_keeps_missing_methods(tmp_path, monkeypatch):
    from torch_impl import per_sample

    monkeypatch.setattr(per_sample, "MISSING", {"opacus_hooks": "opacus is not installed"})
    cfg = parse_args(["--batch-sizes", "4,2", "--methods", "vmap,compile_cudagraphs,opacus_hooks,loop"])
    gpu = plan_points(cfg, tmp_path / "w", "cuda")
    keys = [(s.framework, s.kind, s.method, s.batch_size) for s in gpu]
    assert ("torch", "per_sample", "compile_cudagraphs", 2) in keys
    assert [k[3] for k in keys[:2]] == [2, 4] and keys[0][:3] == keys[1][:3]  # grouped, B ascending
    assert [k[2] for k in keys][-4:] == ["loop"] * 4  # the slow loop last
    opacus = next(s for s in gpu if s.method == "opacus_hooks")
    assert _skip_reason(opacus, {}) == "opacus is not installed"  # recorded as skipped, not dropped
    cpu = plan_points(parse_args(["--batch-sizes", "4,2", "--methods", "vmap"]), tmp_path / "w", "cpu")
    assert [s.batch_size for s in cpu][:2] == [2, 2]  # ungrouped: batch size by batch size, as before
    assert not any(s.method == "compile_cudagraphs" for s in cpu)


def test_grouped_process_measures_in_order_with_startup_timed(tmp_path):
    from compare.benchmark.cli import point_env

    path = tmp_path / "w.safetensors"
    save_weights(path, init_weights(0))
    specs = [PointSpec(framework="torch", kind="reference", method="batched", batch_size=b, dtype="float32",
                       device="cpu", loss="nll_log_softmax", weights=str(path), min_repeats=1, min_seconds=0.0)
             for b in (1, 2)]
    records = list(run_group(specs, env=point_env(parse_args([])), timeout=120))
    assert [(r["batch_size"], r["status"], r["index_in_process"]) for r in records] == [(1, "ok", 0), (2, "ok", 1)]
    start = records[0]["startup"]
    assert start == records[1]["startup"] and start["import_s"] > 0 and start["total_s"] >= start["import_s"]
