"""One figure and a table of ``compare.train --dtype float32`` against ``--dtype bfloat16`` over seeds.

Reads DIR/<dtype>-seed<k>/<model>/train.json (as written by the runs in DIR/README.md), draws DIR/accuracy.png
(test accuracy per seed and framework, both dtypes; mean loss curves) and writes DIR/summary.md: the mean and
spread (min..max) of each dtype's test accuracy per framework, at the same epsilon, and whether the bfloat16
mean lies within the float32 seeds' spread.  Usage: python scripts/bf16_train_figure.py paper/cpu-bf16-train
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DTYPES = ("float32", "bfloat16")


def load(root: Path) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {d: [] for d in DTYPES}
    for path in sorted(root.glob("*-seed*/*/train.json")):
        report = json.loads(path.read_text())
        runs[report["config"]["dtype"]].append(report)
    return runs


def main(argv: list[str] | None = None) -> int:
    root = Path((argv or sys.argv[1:])[0])
    runs = load(root)
    fws = tuple(runs["float32"][0]["frameworks"])
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 4))
    lines = ["| framework | dtype | seeds | test accuracy per seed | mean | spread | epsilon |", "|---|---|---|---|---|---|---|"]
    verdicts = []
    for i, fw in enumerate(fws):
        stats = {}
        for j, dtype in enumerate(DTYPES):
            acc = [r["frameworks"][fw]["test_accuracy"] for r in runs[dtype]]
            eps = {round(r["epsilon"], 3) for r in runs[dtype]}
            stats[dtype] = acc
            ax_acc.scatter([i * 3 + j] * len(acc), acc, label=f"{fw} {dtype}")
            losses = np.mean([r["frameworks"][fw]["loss"] for r in runs[dtype]], axis=0)
            ax_loss.plot(losses, label=f"{fw} {dtype} (mean of {len(acc)})", linestyle="-" if j == 0 else "--")
            lines.append(f"| {fw} | {dtype} | {len(acc)} | {', '.join(f'{a:.4f}' for a in acc)} | {np.mean(acc):.4f} | "
                         f"{min(acc):.4f}..{max(acc):.4f} | {', '.join(map(str, sorted(eps)))} |")
        inside = min(stats["float32"]) <= np.mean(stats["bfloat16"]) <= max(stats["float32"])
        verdicts.append(f"{fw}: bfloat16 mean {np.mean(stats['bfloat16']):.4f} "
                        f"{'within' if inside else 'OUTSIDE'} the float32 spread "
                        f"{min(stats['float32']):.4f}..{max(stats['float32']):.4f}")
    cfg = runs["float32"][0]["config"]
    ax_acc.set_xticks([i * 3 + j for i in range(len(fws)) for j in range(2)],
                      [f"{fw}\n{d}" for fw in fws for d in DTYPES])
    ax_acc.set_ylabel("test accuracy")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("training loss")
    ax_loss.legend(fontsize=7)
    fig.suptitle(f"{cfg.get('model', '')} DP-SGD ({cfg['clipping']}), float32 vs bfloat16 compute, "
                 f"eps={runs['float32'][0]['epsilon']:.2f}", fontsize=9)
    fig.tight_layout()
    fig.savefig(root / "accuracy.png", dpi=120)
    (root / "summary.md").write_text("\n".join(lines + [""] + [f"- {v}" for v in verdicts]) + "\n")
    print("\n".join(lines + verdicts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
