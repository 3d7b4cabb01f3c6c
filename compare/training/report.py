"""What ``compare.train`` writes besides the progress lines: the report's meta, ``train.json``, the loss figure,
and the one line an interrupted run prints."""
from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

import numpy as np

from compare.provenance import command_line, provenance
from compare.spec import DEFAULT_MODEL, MODELS
from compare.training.data import Dataset


def meta(data: Dataset, steps: int, sample_rate: float, model: str = DEFAULT_MODEL,
         argv: list[str] | None = None) -> dict:
    """``compare.provenance``'s fields (command, commit, date, CPU, versions) and the training's data and
    threads."""
    import torch

    return {
        **provenance(command_line(argv, "python -m compare.train")),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": model,
        "model_description": MODELS[model].description,
        "data": data.description,
        "dataset": data.describe(),
        "steps": steps,
        "sample_rate": sample_rate,
        "threads": {"torch": torch.get_num_threads(), "cpu_count": os.cpu_count()},
        "notes": [
            "batches: a seeded shuffle per epoch, fixed-size batches, remainder dropped; the accountant "
            "assumes Poisson sampling at rate batch_size / n_train (the usual approximation)",
            "noise: one float32 numpy standard normal draw per step, shared by both frameworks",
            "step_ms: median wall time of the native DP step (per-sample grads, clip, noise, SGD update) "
            "excluding the first (compiling) step and the host-side batch/noise preparation",
            "sgd_step_ms: median of the non-private step (batched mean gradient, SGD) at the same batch size",
            "epsilon = inf when noise_multiplier = 0: no differential privacy guarantee",
        ],
    }


def write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def plot(report: dict, out: Path) -> list[Path]:
    """train_loss.{pdf,png} from the report alone: each framework's loss per step in its colour (top) and,
    with both frameworks, their absolute difference (bottom); one paper column wide (``compare.style``)."""
    from compare import style

    runs = report["frameworks"]
    both = len(runs) == 2
    cfg, eps, meta = report["config"], report["epsilon"], report["meta"]
    with style.figure_context() as plt:
        fig, axes = plt.subplots(2 if both else 1, 1, figsize=(style.COLUMN_WIDTH_IN, 2.8 if both else 2.0),
                                 sharex=True, squeeze=False, layout="constrained",
                                 gridspec_kw={"height_ratios": [3, 1.2]} if both else None)
        ax = axes[0, 0]
        for fw in style.framework_order(runs):
            r = runs[fw]
            ax.plot(r["loss"], color=style.color(fw), linestyle="-" if fw == "torch" else "--", linewidth=0.8,
                    label=f"{style.FRAMEWORK_NAMES.get(fw, fw)} (test acc. {r['test_accuracy']:.3f})")
        ax.set_ylabel("training loss")
        synthetic = " (synthetic)" if meta["dataset"].get("synthetic") else ""
        eps_text = "inf" if eps is None or not np.isfinite(eps) else f"{eps:.2f}"
        ax.set_title(f"clip {cfg['clip']}, σ {cfg['noise_multiplier']}, B {cfg['batch_size']}, lr {cfg['lr']}, "
                     f"ε {eps_text} at δ {report['delta']:g}", fontsize=6, pad=2)
        if both:
            t, j = (np.asarray(runs[fw]["loss"]) for fw in ("torch", "jax"))
            axes[1, 0].semilogy(np.maximum(np.abs(t - j), 1e-17), ".", color="0.2", markersize=1.5)
            axes[1, 0].set_ylabel("|PyTorch − JAX|")
        axes[-1, 0].set_xlabel("step")
        style.title(fig, report.get("model") or meta.get("model") or cfg.get("model") or DEFAULT_MODEL,
                    f"DP-SGD ({cfg.get('clipping', '')}) on {meta['dataset']['name']}{synthetic}")
        style.finish(fig, meta, [cfg["dtype"]], ax.get_legend_handles_labels()[0], ncol=2)
        return style.save(fig, Path(out), "train_loss")


def kept_line(dirs: list[Path], signame: str) -> str:
    """What an interrupted training kept: each run directory's progress (steps per framework) and report."""
    kept = []
    for out in dirs:
        progress = out / "train_progress.jsonl"
        if not progress.is_file():
            continue
        steps: dict[str, int] = {}
        for line in progress.read_text().splitlines():
            with contextlib.suppress(ValueError):
                fw = json.loads(line).get("framework")
                if fw:
                    steps[fw] = steps.get(fw, 0) + 1
        done = ", ".join(f"{fw} {n} steps" for fw, n in steps.items()) or "no step"
        kept.append(f"{progress} ({done})" + (f" and {out / 'train.json'}" if (out / "train.json").is_file() else ""))
    what = "; ".join(kept) if kept else "nothing (no step had finished)"
    return (f"interrupted ({signame}): kept {what}; the same command with --resume continues from each "
            "framework's last checkpoint (without it, starts over and moves this run to runs/)")
