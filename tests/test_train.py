"""``python -m compare.train``: bad input stops before training; a tiny run writes every output it promises."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

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


@pytest.mark.slow
def test_tiny_run_writes_report_progress_and_figure(tmp_path):
    assert train.main([*TINY, "--noise-multiplier", "0", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "train.json").read_text())
    assert report["complete"] and math.isinf(report["epsilon"]) and report["delta"] == 1e-5
    assert report["meta"]["dataset"]["name"].startswith("sklearn-digits")
    torch_r, jax_r = report["frameworks"]["torch"], report["frameworks"]["jax"]
    assert len(torch_r["loss"]) == len(jax_r["loss"]) == 2
    # float32, same steps without noise: see tests/test_dp.py for the tolerance
    np.testing.assert_allclose(jax_r["loss"], torch_r["loss"], rtol=1e-4)
    for r in (torch_r, jax_r):
        assert 0 <= r["test_accuracy"] <= 1 and r["step_ms"] > 0 and r["sgd_step_ms"] > 0
    lines = (tmp_path / "train_progress.jsonl").read_text().splitlines()[1:]
    assert [json.loads(line)["framework"] for line in lines] == ["torch"] * 2 + ["jax"] * 2
    assert (tmp_path / "train_loss.pdf").stat().st_size > 0 and (tmp_path / "train_loss.png").stat().st_size > 0


def test_noisy_config_reports_finite_epsilon_and_interruption_keeps_progress(tmp_path, monkeypatch):
    def interrupt(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "accuracy", interrupt)  # strike right after torch's last step
    with pytest.raises(KeyboardInterrupt):
        train.main([*TINY, "--noise-multiplier", "1.0", "--frameworks", "torch", "--out", str(tmp_path)])
    header, *lines = [json.loads(line) for line in (tmp_path / "train_progress.jsonl").read_text().splitlines()]
    assert 0 < header["epsilon"] < math.inf and header["start"]["noise_multiplier"] == 1.0
    assert [(d["framework"], d["step"]) for d in lines] == [("torch", 0), ("torch", 1)]
    assert not (tmp_path / "train.json").exists()
