"""Figures beyond the benchmark's, all in ``compare.style``: the training loss, float32 vs bfloat16 over seeds, the
sequence-length panel; and ``python -m compare.figures --all`` finding every figure's data under a root."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from matplotlib.colors import to_hex

from compare import style
from compare.figures import figure_sources, main


def _report(dtype: str = "float32", seed: int = 0, acc: float = 0.9) -> dict:
    loss = [2.3 - 0.1 * i for i in range(5)]
    return {"meta": {"dataset": {"name": "digits"}, "versions": {"torch": "2.15.0", "jax": "0.12.0"},
                     "device": "Test CPU", "git_commit": "0123456789", "date": "2026-12-01T00:00:00+00:00"},
            "config": {"clip": 1.0, "noise_multiplier": 0.8, "batch_size": 64, "lr": 0.5, "dtype": dtype,
                       "clipping": "bk", "model": "mnist_cnn", "seed": seed},
            "epsilon": 5.0, "delta": 1e-5, "model": "mnist_cnn",
            "frameworks": {fw: {"loss": [v + 0.01 * (fw == "jax") for v in loss], "test_accuracy": acc}
                           for fw in ("jax", "torch")}}  # jax first: the colours must follow the framework


def test_training_loss_uses_each_frameworks_colour_and_names_workload_and_commit(tmp_path, monkeypatch):
    from compare.training.report import plot

    seen = {}
    real = style.finish

    def spy(fig, meta, details=(), legend=None, ncol=4):
        real(fig, meta, details, legend, ncol)
        seen.update(title=fig._suptitle.get_text(), footer=fig.texts[-1].get_text(),
                    colours={line.get_label().split()[0]: to_hex(line.get_color()) for line in fig.axes[0].lines})

    monkeypatch.setattr(style, "finish", spy)
    paths = plot(_report(), tmp_path)
    assert {p.name for p in paths} == {"train_loss.pdf", "train_loss.png"}
    assert seen["colours"] == {"PyTorch": style.COLORS["torch"], "JAX": style.COLORS["jax"]}
    assert seen["title"].startswith("mnist_cnn: ") and "commit 0123456" in seen["footer"]


def test_float32_vs_bfloat16_summary_and_figure(tmp_path):
    from compare.training.dtypes import main as dtypes_main

    for dtype, accs in (("float32", (0.80, 0.85, 0.90)), ("bfloat16", (0.86, 0.87, 0.88))):
        for seed, acc in enumerate(accs):
            d = tmp_path / f"{dtype}-seed{seed}" / "mnist_cnn"
            d.mkdir(parents=True)
            (d / "train.json").write_text(json.dumps(_report(dtype, seed, acc)))
    assert dtypes_main([str(tmp_path)]) == 0
    summary = (tmp_path / "summary.md").read_text()
    assert "| torch | bfloat16 | 3 | 0.8600, 0.8700, 0.8800 | 0.8700 |" in summary
    assert "torch: bfloat16 mean 0.8700 within the float32 spread 0.8000..0.9000" in summary
    assert (tmp_path / "accuracy.pdf").stat().st_size > 1000 and (tmp_path / "accuracy.png").is_file()
    assert dtypes_main([str(tmp_path / "float32-seed0")]) == 2  # no runs under it: one line, nothing drawn


def test_all_finds_every_kind_of_source_and_skips_runs_without_figures(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "results.json").write_text(json.dumps({"meta": {}, "timings": []}))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "results.json").write_text(json.dumps({"meta": {"config": {"figures": False}},
                                                             "timings": []}))
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "results.json").write_text(json.dumps({"command": "not a compare.run file"}))
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "train.json").write_text(json.dumps(_report()))
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "panel.json").write_text("{}")
    (tmp_path / "s" / "float32-seed0").mkdir(parents=True)
    found = {(kind, p.relative_to(tmp_path).as_posix()) for kind, p in figure_sources(tmp_path)}
    assert found == {("results", "a/results.json"), ("train", "t/train.json"), ("panel", "p/panel.json"),
                     ("dtypes", "s")}


def test_cli_wants_exactly_one_of_path_all_and_latex_doc(tmp_path):
    for argv in ([], [str(tmp_path), "--all", str(tmp_path)]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
    assert main(["--all", str(tmp_path / "missing")]) == 2


def test_lookalike_markers_are_grouped():
    assert style.lookalike_key("D") == style.lookalike_key("d")
    assert style.lookalike_key("o") == style.lookalike_key("h")
    assert style.lookalike_key("s") != style.lookalike_key("D")


def test_bars_for_a_single_x_and_lines_otherwise():
    import numpy as np

    one = [style.Series("torch", "a", np.array([64.0]), np.array([1.0]))]
    two = [style.Series("torch", "a", np.array([64.0, 128.0]), np.array([1.0, 2.0]))]
    assert style.single_x(one) and not style.single_x(two)
    with style.figure_context() as plt:
        fig, ax = plt.subplots()
        assert style.series(ax, one, {"a": "o"}) is True and len(ax.patches) == 1
        fig2, ax2 = plt.subplots()
        assert style.series(ax2, two, {"a": "o"}) is False and not ax2.patches and ax2.get_yscale() == "log"
        plt.close("all")


def test_style_is_what_every_drawing_module_imports():
    """No drawing module keeps colours or rc settings of its own: they come from compare.style."""
    root = Path(__file__).resolve().parents[1]
    drawing = [p for p in (*root.glob("compare/**/*.py"), *root.glob("scripts/*.py"))
               if "savefig" in p.read_text() and p.name != "style.py"]
    assert not drawing, f"save figures through compare.style.save: {drawing}"
    for p in (*root.glob("compare/**/*.py"), *root.glob("scripts/*.py")):
        text = p.read_text()
        if p.name != "style.py" and ("#d9480f" in text or "#1c7ed6" in text or "rc_context" in text):
            pytest.fail(f"{p} sets colours or rc settings outside compare.style")
