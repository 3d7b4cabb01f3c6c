"""The one figure style of the repository: every figure it draws goes through here.

One colour per framework (PyTorch orange, JAX blue; JAX markers hollow so the frameworks also part in grey
print), one marker per method (ours and each peer's, from ``contract.peers.markers``, the single source),
baselines dashed, memory in MB (10^6 bytes, as the tables print it), sized for one paper column (3.3 in) with
fonts that stay legible there, the workload in the title, a footer with versions, CPU and commit from the
results' meta, and every figure saved as PDF and PNG. ``series`` draws one figure's points either as lines with
error bars (a batch-size sweep) or, when the data hold a single x value, as grouped bars with error bars, so a
single-batch-size run never becomes a line plot of lone points.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from contract.peers import Marker, markers

COLUMN_WIDTH_IN = 3.3  # one column of a two-column paper
MB = 1e6  # memory unit of every figure and table (bytes / MB)
COLORS: dict[str, str] = {"torch": "#d9480f", "jax": "#1c7ed6"}  # PyTorch orange / JAX blue
FRAMEWORK_NAMES: dict[str, str] = {"torch": "PyTorch", "jax": "JAX"}
BASELINES: tuple[str, ...] = ("batched", "sgd")  # drawn dashed: what the other lines are measured against
# A method registered nowhere (a results file of other code) gets one of these n-armed asterisks, which no
# registered method uses.
SPARE_MARKERS: tuple[Marker, ...] = tuple((n, 2, 0) for n in (5, 7, 8, 9, 10))
# Markers that read as the same shape at 3 pt: two methods of one figure must not fall into one group.
LOOKALIKE: tuple[frozenset, ...] = (frozenset({"o", "8", "h", "H", "p"}), frozenset({"D", "d"}),
                                    frozenset({"x", "X"}), frozenset({"*", (5, 1, 0)}), frozenset({"+", "P"}))
RC = {"font.size": 7, "axes.titlesize": 7, "axes.labelsize": 7, "legend.fontsize": 6, "xtick.labelsize": 6,
      "ytick.labelsize": 6, "lines.linewidth": 0.9, "lines.markersize": 3.5, "axes.grid": True,
      "grid.alpha": 0.3, "grid.linewidth": 0.5, "errorbar.capsize": 1.5, "savefig.bbox": "tight",
      "savefig.pad_inches": 0.02, "pdf.fonttype": 42}
FOOTER_SIZE = 5.0
FOOTER_CHARS = 100  # a footer line that fits one column at FOOTER_SIZE


def color(framework: str) -> str:
    return COLORS.get(framework, "0.2")


def framework_order(frameworks) -> list[str]:
    """torch, jax, then anything else alphabetically: the same order in every legend and panel row."""
    return sorted(set(frameworks), key=lambda fw: (list(COLORS).index(fw) if fw in COLORS else 99, fw))


def fill(framework: str) -> str:
    """Filled markers for torch, hollow for JAX."""
    return "none" if framework == "jax" else "full"


def linestyle(method: str) -> str:
    return "--" if method in BASELINES else "-"


def marker_map(methods) -> dict[str, Marker]:
    """method -> its registered marker; unregistered methods get a spare one (sorted, so stable)."""
    known, spare = markers(), iter(SPARE_MARKERS)
    return {m: known.get(m) or next(spare, "o") for m in sorted(methods)}


def lookalike_key(marker: Marker) -> object:
    for i, group in enumerate(LOOKALIKE):
        if marker in group:
            return ("group", i)
    return marker


@dataclass(frozen=True)
class Series:
    """One framework's method at several x: values and, where measured, the 95% interval [lo, hi]."""

    framework: str
    method: str
    x: np.ndarray
    y: np.ndarray
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None


def single_x(series: Sequence[Series]) -> bool:
    """True when every series has the same single x value: draw bars, not lines."""
    xs = {float(v) for s in series for v in s.x}
    return len(xs) == 1


def _yerr(s: Series) -> np.ndarray | None:
    if s.lo is None or s.hi is None:
        return None
    lo, hi = np.asarray(s.lo, float), np.asarray(s.hi, float)
    return np.vstack([np.clip(s.y - lo, 0, None), np.clip(hi - s.y, 0, None)])


def draw_lines(ax, series: Sequence[Series], marks: dict[str, Marker]) -> None:
    """Each series a line (baselines dashed) with its interval as error bars where it has one."""
    for s in sorted(series, key=lambda s: (framework_order([s.framework, *COLORS]).index(s.framework), s.method)):
        ax.errorbar(s.x, s.y, yerr=_yerr(s), color=color(s.framework), marker=marks.get(s.method, "o"),
                    linestyle=linestyle(s.method), fillstyle=fill(s.framework), elinewidth=0.6)


def draw_bars(ax, series: Sequence[Series], order: Sequence[str] | None = None, base: float = 0.0) -> None:
    """A single x: one group of bars per method (x axis), one bar per framework in its colour (JAX hatched),
    each from ``base`` (0, or 1 for a ratio) to its value on a linear axis, the interval as an error bar."""
    methods = list(order or dict.fromkeys(s.method for s in series))
    fws = framework_order(s.framework for s in series)
    width = min(0.8 / max(len(fws), 1), 0.32)
    for j, fw in enumerate(fws):
        mine = {s.method: s for s in series if s.framework == fw}
        xs, ys, errs = [], [], []
        for i, m in enumerate(methods):
            if m in mine:
                s = mine[m]
                xs.append(i + (j - (len(fws) - 1) / 2) * width)
                ys.append(float(s.y[0]))
                e = _yerr(s)
                errs.append(e[:, 0] if e is not None else (0.0, 0.0))
        if xs:
            yerr = np.array(errs).T if np.any(errs) else None  # no interval measured: no error bar
            ax.bar(xs, np.array(ys) - base, width, bottom=base, color=color(fw), edgecolor=color(fw),
                   linewidth=0.6, fill=fw != "jax", hatch="////" if fw == "jax" else None, yerr=yerr,
                   error_kw={"elinewidth": 0.6, "ecolor": "0.15"})
    ax.set_xticks(range(len(methods)), methods, rotation=30 if len(methods) > 3 else 0,
                  ha="right" if len(methods) > 3 else "center")
    ax.set_xlim(-0.6, len(methods) - 0.4)
    ax.grid(axis="x", visible=False)


def series(ax, data: Sequence[Series], marks: dict[str, Marker], order: Sequence[str] | None = None,
           base: float = 0.0, log: bool = True) -> bool:
    """Lines with error bars for a sweep (a log y axis when ``log``), grouped bars from ``base`` on a linear
    axis for a single x; returns True when it drew bars."""
    if single_x(data):
        draw_bars(ax, data, order, base)
        return True
    draw_lines(ax, data, marks)
    if log:
        ax.set_yscale("log")
    return False


def handles(frameworks: Sequence[str], marks: dict[str, Marker] | None = None, extra: Sequence | None = None) -> list:
    """Legend entries: frameworks by colour, methods by marker (grey), then ``extra`` handles."""
    from matplotlib.lines import Line2D

    out = [Line2D([], [], color=color(fw), marker="o", fillstyle=fill(fw), label=FRAMEWORK_NAMES.get(fw, fw))
           for fw in framework_order(frameworks)]
    out += [Line2D([], [], color="0.3", marker=mk, linestyle="none", label=m) for m, mk in (marks or {}).items()]
    return out + list(extra or [])


def footer_text(meta: dict, *details: str) -> str:
    """``details; CPU; torch X, jax Y, flax Z; commit abc1234, date``: what a figure's numbers were made with."""
    v = meta.get("versions") or {}
    commit = meta.get("git_commit") or meta.get("commit")
    date = (meta.get("date") or meta.get("created") or "")[:10]
    parts = [d for d in details if d]
    parts.append(meta.get("device") or meta.get("cpu") or "CPU not recorded")
    parts.append(", ".join(f"{k} {v[k]}" for k in ("torch", "jax", "flax") if v.get(k)) or "versions not recorded")
    dirty = "-dirty" if str(commit).endswith("-dirty") else ""
    stamp = f"commit {str(commit)[:7]}{dirty}" if commit else "commit not recorded"
    parts.append(stamp + (f", {date}" if date else ""))
    if len("; ".join(parts)) <= FOOTER_CHARS:
        return "; ".join(parts)
    n = len([d for d in details if d])  # too wide for the column: the details on lines of their own
    return "\n".join([*parts[:n], "; ".join(parts[n:])])


def _bottom(fig, artists) -> tuple[float, float]:
    """(left, bottom) in figure coordinates of what ``artists`` draw, labels included."""
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    boxes = [a.get_tightbbox(r) for a in artists]
    boxes = [b for b in boxes if b is not None and np.isfinite(b.y0)]
    return (min((b.x0 for b in boxes), default=0.0) / fig.bbox.width,
            min((b.y0 for b in boxes), default=0.0) / fig.bbox.height)


def finish(fig, meta: dict, details: Sequence[str] = (), legend: Sequence | None = None, ncol: int = 4) -> None:
    """Below the axes (and their labels): the legend in ``ncol`` columns, centred, then the footer (versions,
    CPU, commit). The saved figure is cropped to its artists, so both stay inside it."""
    _, y = _bottom(fig, [a for a in fig.axes if a.get_visible()])
    if legend:
        leg = fig.legend(handles=list(legend), loc="upper center", bbox_to_anchor=(0.5, y - 0.01), ncol=ncol,
                         frameon=False, handlelength=1.6, columnspacing=0.9, handletextpad=0.4, borderaxespad=0.0)
        _, y = _bottom(fig, [leg])
    x, _ = _bottom(fig, [a for a in fig.axes if a.get_visible()])
    fig.text(max(x, 0.0), y - 0.012, footer_text(meta, *details), fontsize=FOOTER_SIZE, color="0.35", ha="left",
             va="top")
    fig.set_layout_engine("none")  # the positions above hold: the layout must not move the axes again


def title(fig, workload: str, what: str) -> None:
    """``workload: what`` above the figure."""
    fig.suptitle(f"{workload}: {what}" if workload else what, fontsize=7)


def plain_log_y(ax) -> None:
    """Log y ticks as plain numbers (2, 5, 10, 20 ... rather than 2x10^0), minor ones only over short ranges."""
    from matplotlib.ticker import FuncFormatter

    if ax.get_yscale() != "log":
        return
    lo, hi = ax.get_ylim()
    span = hi / lo if lo > 0 else np.inf

    def minor(v: float, _pos: int) -> str:
        mantissa = round(v / 10 ** np.floor(np.log10(v)))
        every = span < 4 or (span < 30 and mantissa in (2, 5))  # a short range: enough labels to read values
        return f"{v:g}" if every else ""

    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(minor))


@contextlib.contextmanager
def figure_context() -> Iterator:
    """pyplot with the Agg backend and the style's rc settings; yields ``matplotlib.pyplot``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with plt.rc_context(RC):
        yield plt


def save(fig, out_dir: Path, name: str, dpi: int = 300) -> list[Path]:
    """``out_dir/name.pdf`` and ``.png``; closes the figure."""
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.{ext}" for ext in ("pdf", "png")]
    for p in paths:
        fig.savefig(p, dpi=dpi)
    plt.close(fig)
    return paths
