"""float32 against bfloat16 compute over seeds (``compare.train --dtype``): one figure and a table.

Reads DIR/<dtype>-seed<k>/<model>/train.json, draws DIR/accuracy.{pdf,png} (test accuracy per seed and
framework, both dtypes; mean loss curves) and writes DIR/summary.md: the mean and spread (min..max) of each
dtype's test accuracy per framework, at the same epsilon, and whether the bfloat16 mean lies within the float32
seeds' spread. Entry point: ``scripts/bf16_train_figure.py DIR``; ``python -m compare.figures --all`` redraws it.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from compare import style

DTYPES = ("float32", "bfloat16")


def load(root: Path) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {d: [] for d in DTYPES}
    for path in sorted(root.glob("*-seed*/*/train.json")):
        report = json.loads(path.read_text())
        runs[report["config"]["dtype"]].append(report)
    return runs


def draw(root: Path, runs: dict[str, list[dict]]) -> list[Path]:
    """accuracy.{pdf,png}: each seed's test accuracy per framework and dtype (top; bfloat16 hollow squares,
    float32 filled circles) and each framework and dtype's mean loss curve (bottom), in ``compare.style``."""
    fws = style.framework_order(runs["float32"][0]["frameworks"])
    cfg = runs["float32"][0]["config"]
    with style.figure_context() as plt:
        fig, (ax_acc, ax_loss) = plt.subplots(2, 1, figsize=(style.COLUMN_WIDTH_IN, 3.4), layout="constrained",
                                              gridspec_kw={"height_ratios": [1, 1.3]})
        for i, fw in enumerate(fws):
            for j, dtype in enumerate(DTYPES):
                acc = [r["frameworks"][fw]["test_accuracy"] for r in runs[dtype]]
                ax_acc.plot([i * 3 + j] * len(acc), acc, linestyle="none", color=style.color(fw),
                            marker="o" if dtype == "float32" else "s",
                            fillstyle="full" if dtype == "float32" else "none")
                ax_acc.plot([i * 3 + j - 0.25, i * 3 + j + 0.25], [np.mean(acc)] * 2, color=style.color(fw),
                            linewidth=1.0)
                losses = np.mean([r["frameworks"][fw]["loss"] for r in runs[dtype]], axis=0)
                ax_loss.plot(losses, color=style.color(fw), linestyle="-" if dtype == "float32" else "--",
                             linewidth=0.8, label=f"{style.FRAMEWORK_NAMES.get(fw, fw)} {dtype}")
        ax_acc.set_xticks([i * 3 + j for i in range(len(fws)) for j in range(2)],
                          [f"{style.FRAMEWORK_NAMES.get(fw, fw)}\n{d}" for fw in fws for d in DTYPES])
        ax_acc.set_xlim(-0.7, 3 * len(fws) - 1.3)
        ax_acc.set_ylabel("test accuracy")
        ax_acc.grid(axis="x", visible=False)
        ax_loss.set_xlabel("step")
        ax_loss.set_ylabel(f"training loss (mean of {len(runs['float32'])} seeds)")
        style.title(fig, cfg.get("model", ""), f"DP-SGD ({cfg['clipping']}), float32 vs bfloat16 compute, "
                    f"ε {runs['float32'][0]['epsilon']:.2f}")
        style.finish(fig, runs["float32"][0]["meta"], [], ax_loss.get_legend_handles_labels()[0], ncol=2)
        return style.save(fig, root, "accuracy")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python scripts/bf16_train_figure.py DIR (holding <dtype>-seed<k>/<model>/train.json)",
              file=sys.stderr)
        return 2
    root = Path(args[0])
    runs = load(root)
    if not runs["float32"] or not runs["bfloat16"]:
        print(f"{root}: no float32 and bfloat16 train.json under <dtype>-seed<k>/<model>/", file=sys.stderr)
        return 2
    fws = tuple(runs["float32"][0]["frameworks"])
    lines = ["| framework | dtype | seeds | test accuracy per seed | mean | spread | epsilon |", "|---|---|---|---|---|---|---|"]
    verdicts = []
    for fw in fws:
        stats = {}
        for dtype in DTYPES:
            acc = [r["frameworks"][fw]["test_accuracy"] for r in runs[dtype]]
            eps = {round(r["epsilon"], 3) for r in runs[dtype]}
            stats[dtype] = acc
            lines.append(f"| {fw} | {dtype} | {len(acc)} | {', '.join(f'{a:.4f}' for a in acc)} | {np.mean(acc):.4f} | "
                         f"{min(acc):.4f}..{max(acc):.4f} | {', '.join(map(str, sorted(eps)))} |")
        inside = min(stats["float32"]) <= np.mean(stats["bfloat16"]) <= max(stats["float32"])
        verdicts.append(f"{fw}: bfloat16 mean {np.mean(stats['bfloat16']):.4f} "
                        f"{'within' if inside else 'OUTSIDE'} the float32 spread "
                        f"{min(stats['float32']):.4f}..{max(stats['float32']):.4f}")
    draw(root, runs)
    (root / "summary.md").write_text("\n".join(lines + [""] + [f"- {v}" for v in verdicts]) + "\n")
    print("\n".join(lines + verdicts))
    return 0


