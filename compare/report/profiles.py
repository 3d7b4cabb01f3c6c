"""The profiles committed as text (``python -m compare.profile`` and ``scripts/jax_outer_product.py`` printouts):
their stage timings and the outer-product variants, read back as numbers."""
from __future__ import annotations

import re
from pathlib import Path

from compare.report.markdown import Page, table

STAGE_HEADER = "each timed on its own (median ms)"
_STAGE = re.compile(r"^\s+(?P<stage>\S.*?)\s+(?P<wall>\d+\.\d+)\s+(?P<cpu>\d+\.\d+)\s*$")
_VARIANT = re.compile(r"^(?P<name>\S.*?)\s+(?P<ms>\d+\.\d+) ms\s+(?P<gbs>\d+\.\d+) GB/s\s*$")


def stages(text: str) -> dict[str, float]:
    """{stage: median wall ms} of the stage section of a ``compare.profile`` printout."""
    out, inside = {}, False
    for line in text.splitlines():
        if STAGE_HEADER in line:
            inside = True
            continue
        m = _STAGE.match(line) if inside else None
        if m:
            out[m["stage"]] = float(m["wall"])
        elif inside and line.strip():
            inside = False
    return out


def variants(text: str) -> tuple[str, dict[str, tuple[float, float]]]:
    """(the printout's first line, {variant: (ms, GB/s)}) of a ``scripts/jax_outer_product.py`` printout."""
    lines = text.splitlines()
    return lines[0], {m["name"]: (float(m["ms"]), float(m["gbs"])) for m in map(_VARIANT.match, lines[1:]) if m}


def _label(path: Path) -> str:
    head = path.read_text().splitlines()[0].lstrip("# ")
    return head.split(" B=")[0] + f" (`{path.name}`)"


def stage_table(page: Page, files: list[Path]) -> str | None:
    """One column per profile file, one row per stage (median wall ms)."""
    cols = {f: stages(f.read_text()) for f in files}
    cols = {f: s for f, s in cols.items() if s}
    if not cols:
        return None
    rows = list(dict.fromkeys(k for s in cols.values() for k in s))
    return table(["stage", *(_label(f) for f in cols)],
                 [[r, *(f"{s[r]:.1f}" if r in s else "–" for s in cols.values())] for r in rows],
                 "l" + "r" * len(cols))


def variant_table(files: list[Path]) -> str | None:
    data = [variants(f.read_text()) for f in files]
    data = [d for d in data if d[1]]
    if not data:
        return None
    rows = list(dict.fromkeys(k for _, v in data for k in v))
    return table(["variant", *(f"{head}: ms (GB/s)" for head, _ in data)],
                 [[r, *(f"{v[r][0]:.1f} ({v[r][1]:.1f})" if r in v else "–" for _, v in data)] for r in rows],
                 "l" + "r" * len(data))
