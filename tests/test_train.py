"""``python -m compare.train``: bad input stops before training; a tiny run writes every output it promises."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from compare.provenance import missing

import compare.training.cli as train

TINY = ["--steps", "2", "--batch-size", "4", "--lr", "0.1"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--clip", "0"], "clip"),
        (["--clip", "-1"], "clip"),
        (["--batch-size", "0"], "batch-size"),
        (["--batch-size", "100000"], "exceeds"),
        (["--noise-multiplier", "-0.1"], "noise_multiplier"),
        (["--delta", "1.5"], "delta"),
        (["--delta", "0"], "delta"),
        (["--steps", "0"], "steps"),
        (["--data", "/nonexistent/mnist.npz"], "does not exist"),
    ],
)
def test_bad_input_fails_before_training(tmp_path, caplog, args, message):
    assert train.main([*args, "--out", str(tmp_path / "out")]) == 2
    assert message in caplog.text
    assert not (tmp_path / "out").exists()


def test_device_cuda_without_a_gpu_is_one_error_before_training(tmp_path, caplog):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: --device cuda is valid here")
    assert train.main(["--device", "cuda", "--steps", "1", "--out", str(tmp_path / "out")]) == 2
    assert "--device cuda:" in caplog.text and "torch" in caplog.text and "JAX" in caplog.text
    assert not (tmp_path / "out").exists()


def test_bad_data_files_fail_before_training(tmp_path, caplog):
    (tmp_path / "junk.npz").write_bytes(b"garbage")
    assert train.main(["--data", str(tmp_path / "junk.npz"), "--out", str(tmp_path / "a")]) == 2
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "labels.npz", x_train=rng.integers(0, 255, (8, 28, 28), dtype=np.uint8),
             y_train=np.array([0, 1, 2, 3, 4, 5, 6, 10]), x_test=np.zeros((2, 28, 28), np.uint8),
             y_test=np.array([0, 1]))
    assert train.main(["--data", str(tmp_path / "labels.npz"), "--out", str(tmp_path / "b")]) == 2
    assert "cannot read" in caplog.text and "outside 0..9" in caplog.text
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_communication_of_bfloat16_compute_is_its_float32_sums():
    """The all-reduce carries the clipped sums in the parameters' storage dtype: float32 under bfloat16 compute."""
    from contract.communication import step_bytes

    assert step_bytes("logreg", "bfloat16", 2) == step_bytes("logreg", "float32", 2)
    assert step_bytes("logreg", "float64", 2)["allreduce_bytes"] == 2 * step_bytes("logreg", "float32", 2)[
        "allreduce_bytes"]


@pytest.mark.slow
def test_tiny_bfloat16_run_completes_in_both_frameworks(tmp_path):
    assert train.main([*TINY, "--dtype", "bfloat16", "--noise-multiplier", "0", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "train.json").read_text())
    assert report["complete"] and report["config"]["dtype"] == "bfloat16"
    for r in report["frameworks"].values():
        assert len(r["loss"]) == 2 and all(math.isfinite(v) for v in r["loss"]) and 0 <= r["test_accuracy"] <= 1


@pytest.mark.slow
def test_tiny_run_writes_report_progress_and_figure(tmp_path):
    assert train.main([*TINY, "--noise-multiplier", "0", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "train.json").read_text())
    assert report["complete"] and math.isinf(report["epsilon"]) and report["delta"] == 1e-5
    assert report["meta"]["dataset"]["name"].startswith("sklearn-digits")
    assert not missing(report["meta"]) and report["meta"]["command"].startswith("python -m compare.train --")
    torch_r, jax_r = report["frameworks"]["torch"], report["frameworks"]["jax"]
    assert len(torch_r["loss"]) == len(jax_r["loss"]) == 2
    # float32, same steps without noise: see tests/test_dp.py for the tolerance
    np.testing.assert_allclose(jax_r["loss"], torch_r["loss"], rtol=1e-4)
    for r in (torch_r, jax_r):
        assert 0 <= r["test_accuracy"] <= 1 and r["step_ms"] > 0 and r["sgd_step_ms"] > 0
    lines = (tmp_path / "train_progress.jsonl").read_text().splitlines()[1:]
    assert [json.loads(line)["framework"] for line in lines] == ["torch"] * 2 + ["jax"] * 2
    assert (tmp_path / "train_loss.pdf").stat().st_size > 0 and (tmp_path / "train_loss.png").stat().st_size > 0


def test_noisy_config_reports_finite_epsilon_and_interruption_keeps_progress(tmp_path, monkeypatch, capsys):
    def interrupt(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "accuracy", interrupt)  # strike right after torch's last step
    assert train.main([*TINY, "--noise-multiplier", "1.0", "--frameworks", "torch", "--out", str(tmp_path)]) == 130
    line = capsys.readouterr().err.strip().splitlines()[-1]  # one line, no traceback
    assert line.startswith("interrupted (SIGINT): kept ") and "(torch 2 steps)" in line
    header, *lines = [json.loads(line) for line in (tmp_path / "train_progress.jsonl").read_text().splitlines()]
    assert 0 < header["epsilon"] < math.inf and header["start"]["noise_multiplier"] == 1.0
    assert [(d["framework"], d["step"]) for d in lines] == [("torch", 0), ("torch", 1)]
    assert not (tmp_path / "train.json").exists()


# ---------------------------------------------------------------- --model


@pytest.mark.parametrize("value", ["nope", "logreg,nope", ",", "LOGREG"])
def test_bad_model_is_one_usage_line_before_any_work(tmp_path, capsys, value):
    with pytest.raises(SystemExit) as exc:
        train.main(["--model", value, "--steps", "1", "--out", str(tmp_path / "out")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --model" in err and ("unknown model" in err or "empty entry" in err)
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_model_parsing_and_output_layout(tmp_path):
    from compare.spec import MODELS

    assert train.parse_args([]).models == ("seed_cnn",) and train.parse_args([]).model == "seed_cnn"
    assert train.parse_args(["--model", "all"]).models == tuple(MODELS)
    assert train.parse_args(["--model", "logreg, embed"]).models == ("logreg", "embed")
    assert train.run_dir(tmp_path, ("seed_cnn",), "seed_cnn") == tmp_path  # the default stays where it was
    assert train.run_dir(tmp_path, ("logreg",), "logreg") == tmp_path / "logreg"
    assert train.run_dir(tmp_path, ("seed_cnn", "ffnn"), "seed_cnn") == tmp_path / "seed_cnn"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "logreg", "--data", "/nonexistent/mnist.npz"], "28x28 workloads"),
        (["--model", "logreg,ffnn", "--weights", "EXISTING"], "give one --model"),
        (["--model", "logreg,ffnn", "--batch-size", "100000"], "exceeds"),
    ],
)
def test_model_specific_bad_input_fails_before_training(tmp_path, caplog, args, message):
    args = [str(tmp_path / "w.safetensors") if a == "EXISTING" else a for a in args]
    (tmp_path / "w.safetensors").write_bytes(b"")  # --weights must name an existing file
    assert train.main([*args, "--steps", "1", "--out", str(tmp_path / "out")]) == 2
    assert message in caplog.text
    assert not (tmp_path / "out").exists()


def test_weights_of_another_workload_are_rejected(tmp_path, caplog):
    from compare.weights import init_weights, save_weights

    save_weights(tmp_path / "ffnn.safetensors", init_weights(0, "ffnn"), model="ffnn")
    assert train.main(["--model", "logreg", "--weights", str(tmp_path / "ffnn.safetensors"), "--steps", "1",
                       "--out", str(tmp_path / "out")]) == 2
    assert "'ffnn'" in caplog.text and not (tmp_path / "out").exists()


def test_synthetic_teacher_task_is_seeded_balanced_and_named():
    from compare.training.data import load_for_model, load_teacher_task

    a, b = load_teacher_task("ffnn", seed=3, n_train=64, n_test=16), load_teacher_task("ffnn", seed=3, n_train=64,
                                                                                       n_test=16)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    assert a.synthetic and a.name == "synthetic-teacher:ffnn" and a.description.startswith("SYNTHETIC")
    assert a.x_train.shape == (64, 104) and a.x_train.dtype == np.float32
    assert abs(int(a.y_train.sum()) - 32) <= 8  # two classes split at the teacher's median margin (whole pool)
    tokens = load_teacher_task("embed", seed=0, n_train=32, n_test=8)
    assert tokens.x_train.dtype == np.int64 and tokens.x_train.shape == (32, 256)
    assert not load_for_model("mnist_cnn", 0, None).synthetic  # 28x28 workloads: the real digits


@pytest.mark.parametrize("model", ["ffnn", "embed"])
def test_non_seed_workload_trains_both_frameworks_to_the_same_curve(tmp_path, model):
    """float64, with noise: both frameworks see the same data, weights and noise, so the losses agree to rounding."""
    assert train.main(["--model", model, *TINY, "--dtype", "float64", "--noise-multiplier", "0.5",
                       "--out", str(tmp_path)]) == 0
    out = tmp_path / model
    report = json.loads((out / "train.json").read_text())
    assert report["complete"] and report["model"] == model
    assert report["config"]["model"] == model and report["config"]["models"] == [model]
    assert report["meta"]["model"] == model and report["meta"]["data"].startswith("SYNTHETIC")
    assert report["meta"]["dataset"]["name"] == f"synthetic-teacher:{model}" and report["meta"]["dataset"]["synthetic"]
    torch_r, jax_r = report["frameworks"]["torch"], report["frameworks"]["jax"]
    assert torch_r["model"] == jax_r["model"] == model
    np.testing.assert_allclose(jax_r["loss"], torch_r["loss"], rtol=1e-10)
    assert torch_r["test_accuracy"] == jax_r["test_accuracy"]
    header, *lines = [json.loads(line) for line in (out / "train_progress.jsonl").read_text().splitlines()]
    assert header["model"] == model and header["data"].startswith("SYNTHETIC")
    assert [(d["model"], d["framework"]) for d in lines] == [(model, "torch")] * 2 + [(model, "jax")] * 2
    assert (out / "train_loss.png").stat().st_size > 0
    assert not (tmp_path / "train.json").exists()  # a non-default selection never writes into --out itself
