"""What ``compare.train`` writes besides the progress lines: the report's meta, ``train.json``, the loss figure,
and the one line an interrupted run prints."""
from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from compare.lock import lock_status, versions
from compare.spec import DEFAULT_MODEL, MODELS
from compare.training.data import Dataset


def meta(data: Dataset, steps: int, sample_rate: float, model: str = DEFAULT_MODEL) -> dict:
    import torch

    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": model,
        "model_description": MODELS[model].description,
        "data": data.description,
        "dataset": data.describe(),
        "steps": steps,
        "sample_rate": sample_rate,
        "versions": versions(),
        "lock": lock_status(),
        "platform": platform.platform(),
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
    """Both loss curves on one axis (PDF + PNG), made from the report alone."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = report["frameworks"]
    both = len(runs) == 2
    fig, axes = plt.subplots(2 if both else 1, 1, figsize=(6.4, 5.6 if both else 4.0), sharex=True, squeeze=False,
                             gridspec_kw={"height_ratios": [3, 1]} if both else None)
    ax = axes[0, 0]
    for (fw, r), style in zip(runs.items(), ("-", "--")):
        ax.plot(r["loss"], style, label=f"{fw} (test acc {r['test_accuracy']:.3f})")
    cfg, eps = report["config"], report["epsilon"]
    ax.set_ylabel("training loss (cross-entropy)")
    synthetic = " (SYNTHETIC)" if report["meta"]["dataset"].get("synthetic") else ""
    ax.set_title(f"DP-SGD, model {report['model']}, on {report['meta']['dataset']['name']}{synthetic}\n"
                 f"clip={cfg['clip']}, sigma={cfg['noise_multiplier']}, B={cfg['batch_size']}, "
                 f"lr={cfg['lr']}, {cfg['dtype']}, eps={eps:.2f} at delta={report['delta']:g}", fontsize=9)
    ax.legend()
    if both:
        t, j = (np.asarray(r["loss"]) for r in runs.values())
        axes[1, 0].semilogy(np.maximum(np.abs(t - j), 1e-17), "k.", markersize=3)
        axes[1, 0].set_ylabel("|torch - jax|", fontsize=8)
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    paths = [out / "train_loss.pdf", out / "train_loss.png"]
    for path in paths:
        fig.savefig(path, dpi=150)
    plt.close(fig)
    return paths


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
