"""The sequence-length panel's data: each layer's norm route as a point records it, and the tables, crossings and
figure drawn from the records alone (``scripts/seq_length_panel.py`` measures; ``--from-json`` redraws).

A record is the benchmark's (``compare.benchmark.results``) plus ``T``; a point (one framework at one T) carries
``layers`` / ``layers_bk``: per parameterised layer, ``layer_info`` of the side's ``layer_routes``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from compare.benchmark.targets import DP_METHODS

METHODS: tuple[str, ...] = DP_METHODS  # sgd, dp_sgd, dp_ghost, dp_bk
ROUTED: tuple[str, ...] = ("dp_ghost", "dp_bk")  # the steps whose norms take the per-layer routes
LINEAR_KINDS: tuple[str, ...] = ("linear", "projection")  # kinds whose norm is Gram or materialise by the cost model
# "dp_bk@gram" / "dp_bk@materialize": the bk step with EVERY linear(-kind) layer on T positions forced to that norm
# form (``contract.cost_model.forced_routes(linear=...)``): where the two cross is where ghost norms overtake
# materialising in a whole step.
FORCED: tuple[str, ...] = ("dp_bk@gram", "dp_bk@materialize")
FIGURE = "seq_length_panel"


# ---- norm routes: the rules' per-layer answer, and the cost model from the shapes ---------------------------------

def layer_info(route: dict) -> dict:
    """One layer's route (what its rules answered: ``route`` is one entry of a side's ``layer_routes``) and, for a
    linear layer on T > 1 positions, the cost model's choice from its shapes alone (``model``; None otherwise)."""
    from contract import cost_model

    name, kind, sites = route["layer"], route["kind"], route["sites"]
    a_shape, g_shape = tuple(route["a_shape"]), tuple(route["g_shape"])
    positions = math.prod(a_shape[1:-1]) if len(a_shape) > 2 else 1
    d, p = int(a_shape[-1]), int(g_shape[-1])
    on_positions = kind in LINEAR_KINDS and positions > 1
    if not route["norm_rule"]:
        info_route = "fallback" if kind == "other" else "materialize"
    elif kind in LINEAR_KINDS:
        info_route = "gram" if positions > 1 else "rank_one"
    else:
        info_route = "rule"
    info = {"layer": name, "kind": kind, "sites": sites, "a_shape": list(a_shape[1:]), "g_shape": list(g_shape[1:]),
            "route": info_route, "positions": None, "d": None, "p": None, "cost_ratio": None, "slack": None,
            "model": None}
    if on_positions and sites == 1:  # the rule's slack: book-keeping's (BK_MATERIALISE_COST / T) inside bookkeeping()
        slack = cost_model.slack("linear", positions)
        info.update(positions=positions, d=d, p=p, cost_ratio=positions * (d + p) / (d * p), slack=slack,
                    model="gram" if cost_model.gram_is_cheaper(positions, d, p, slack) else "materialize")
    return info


def route_summary(layers: list[dict]) -> dict[str, str]:
    """{layer: route} (the compact form carried by the dp_ghost / dp_bk records)."""
    return {info["layer"]: info["route"] for info in layers}


# ---- tables and figure (from the data alone: --from-json gives the same) -------------------------------------------

def _ok(r: dict | None) -> bool:
    return bool(r) and r.get("status") == "ok" and r.get("median_ms") is not None


def _index(data: dict) -> dict[tuple[str, int, str], dict]:
    return {(r["framework"], r["T"], r["method"]): r for r in data["records"]}


def _frameworks(data: dict) -> list[str]:
    order = ("torch", "jax")
    fws = list(dict.fromkeys(r["framework"] for r in data["records"]))
    return sorted(fws, key=lambda fw: order.index(fw) if fw in order else 99)


def _seq_lens(data: dict) -> list[int]:
    return sorted({r["T"] for r in data["records"]})


def _methods(data: dict) -> list[str]:
    present = list(dict.fromkeys(r["method"] for r in data["records"]))
    return [m for m in METHODS if m in present] + [m for m in present if m not in METHODS]


def crossovers(data: dict, method: str = "dp_ghost", against: str = "dp_sgd") -> dict[str, dict]:
    """Per framework: ``method`` / ``against`` at each T, and where that ratio crosses 1 between two measured T
    (``between``: the pair; ``at``: log-log interpolation between them, an estimate, not a measurement)."""
    idx, out = _index(data), {}
    for fw in _frameworks(data):
        ratios = {}
        for t in _seq_lens(data):
            a, b = idx.get((fw, t, method)), idx.get((fw, t, against))
            if _ok(a) and _ok(b):
                ratios[t] = a["median_ms"] / b["median_ms"]
        crossings = []
        ts = sorted(ratios)
        for t1, t2 in zip(ts, ts[1:]):
            r1, r2 = ratios[t1], ratios[t2]
            if (r1 - 1) * (r2 - 1) < 0:
                frac = -math.log(r1) / (math.log(r2) - math.log(r1))
                crossings.append({"between": [t1, t2], "at": math.exp(math.log(t1) + frac * math.log(t2 / t1)),
                                  "direction": f"{method} faster below" if r1 < 1 else f"{method} faster above"})
        out[fw] = {"method": method, "against": against, "ratios": {str(t): v for t, v in ratios.items()},
                   "crossings": crossings}
    return out


def _ms(v: float) -> str:
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def _short(name: str) -> str:
    """"encoder.layers.1.linear1" -> "linear1" (the blocks' layers have the same shapes)."""
    parts = name.split(".")
    return ".".join(parts[3:]) if name.startswith("encoder.layers.") and len(parts) > 3 else name


def _routes_by_point(data: dict) -> dict[tuple[str, int], list[dict]]:
    return {(p["framework"], p["T"]): p.get("layers") or [] for p in data["points"]}


def _route_cell(layers: list[dict]) -> str:
    """Linear layers on T positions grouped by route, each name once with its count over the blocks."""
    groups: dict[str, dict[str, int]] = {}
    for info in layers:
        if info["kind"] in LINEAR_KINDS and info.get("positions"):
            names = groups.setdefault(info["route"], {})
            names[_short(info["layer"])] = names.get(_short(info["layer"]), 0) + 1
    parts = []
    for route in ("gram", "materialize"):
        names = groups.get(route, {})
        parts.append(f"{route}: " + (", ".join(f"{n}" + (f" x{c}" if c > 1 else "") for n, c in sorted(names.items()))
                                     if names else "-"))
    return "; ".join(parts)


def _counts(layers: list[dict]) -> tuple[int, int]:
    on_t = [i for i in layers if i["kind"] in LINEAR_KINDS and i.get("positions")]
    return sum(i["route"] == "gram" for i in on_t), sum(i["route"] == "materialize" for i in on_t)


def markdown(data: dict) -> str:
    meta, settings = data["meta"], data["meta"]["config"]
    fws, ts, methods = _frameworks(data), _seq_lens(data), _methods(data)
    idx, routes = _index(data), _routes_by_point(data)
    v = meta.get("versions", {})
    arch = settings["arch"]
    lines = [
        "# The transformer's training step vs sequence length T", "",
        f"`{meta['command']}` on {meta['device']} ({meta['cores']} cores, {meta.get('cores_available')} available), "
        f"{meta['date']}, commit {meta.get('git_commit')}. torch {v.get('torch')}, jax {v.get('jax')}, flax "
        f"{v.get('flax')}, optax {v.get('optax')}, numpy {v.get('numpy')}, Python {v.get('python')}; "
        f"lock {'matches' if meta.get('lock', {}).get('matches') else 'differs (see panel.json)'}.", "",
        f"The {'registered' if settings['registered_arch'] else 'CUSTOM'} transformer (width {arch['width']}, "
        f"{arch['heads']} heads, MLP {arch['ff']}, {arch['num_layers']} blocks, vocabulary {arch['vocab']}) with "
        f"seq_len T (positions table (T, {arch['width']})), B = {settings['batch_size']}, {settings['dtype']}, loss "
        f"{settings['loss']}; one training step per method of the `dp` target kind (`compare.benchmark.targets`), "
        f"timed by `targets.measure` (median of >= {settings['min_repeats']} calls and >= "
        f"{settings['min_seconds']:g} s, {settings['warmup']} warm-up, compile apart), each (framework, T) in "
        f"{'its own process' if settings['isolate'] else 'ONE process (in-process run)'}.", "",
        "Each cell: median ms per step, and (x) its ratio to the same framework's `sgd` at the same T. Norm routes: "
        "the linear layers on T positions by the rules' answer, Gram or materialised (xN: in N blocks); every other "
        "layer's route is listed under the second table (fallback = materialised by the vmap fallback).", ""]
    head = ["T"] + [f"{fw} {m}" for fw in fws for m in methods] + ["norm routes (dp_ghost)", "norm routes (dp_bk)"]
    routes_bk = {(p["framework"], p["T"]): p.get("layers_bk") or p.get("layers") or [] for p in data["points"]}
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in ts:
        row = [str(t)]
        for fw in fws:
            base = idx.get((fw, t, "sgd"))
            for m in methods:
                r = idx.get((fw, t, m))
                if not _ok(r):
                    row.append(f"- ({r['status']})" if r else "")
                elif m == "sgd" or not _ok(base):
                    row.append(_ms(r["median_ms"]))
                else:
                    row.append(f"{_ms(r['median_ms'])} ({r['median_ms'] / base['median_ms']:.2f}x)")
        for table in (routes, routes_bk):
            cells = {fw: _route_cell(table.get((fw, t), [])) for fw in fws}
            same = len(set(cells.values())) == 1
            row.append(next(iter(cells.values())) if same else " / ".join(f"{fw}: {c}" for fw, c in cells.items()))
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    for method, against in (("dp_ghost", "dp_sgd"), ("dp_bk", "dp_sgd"), ("dp_bk@gram", "dp_bk@materialize")):
        for fw, c in crossovers(data, method, against).items():
            if not c["ratios"]:
                continue
            ratio_text = " / ".join(f"{c['ratios'][str(t)]:.2f}" for t in ts if str(t) in c["ratios"])
            t_text = " / ".join(str(t) for t in ts if str(t) in c["ratios"])
            cross = "; ".join(f"crosses 1 between T = {x['between'][0]} and {x['between'][1]} (~{x['at']:.0f} by "
                              f"log-log interpolation; {x['direction']})" for x in c["crossings"])
            lines.append(f"- {fw}: {method} / {against} = {ratio_text} at T = {t_text}"
                         + (f"; {cross}." if cross else "; no crossing of 1 in this range."))
    lines += ["", "## Norm routes per linear layer on T positions", "",
              "route = the rules' answer (`rules.norm_sq` on the layer's real input and output cotangent, as the "
              "engine asks); model = `gram_is_cheaper(T, d, p, LINEAR_GRAM_SLACK)` from the shapes alone "
              "(cost ratio T (d + p) / (d p) < slack).", ""]
    head = ["T", "layer", "d", "p", "cost ratio", "slack", "model"] + [f"{fw} route" for fw in fws]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in ts:
        per_fw = {fw: {i["layer"]: i for i in routes.get((fw, t), [])} for fw in fws}
        names = list(dict.fromkeys(n for fw in fws for n, i in per_fw[fw].items()
                                   if i["kind"] in LINEAR_KINDS and i.get("positions")))
        for name in names:
            first = next(per_fw[fw][name] for fw in fws if name in per_fw[fw])
            row = [str(t), name, str(first["d"]), str(first["p"]), f"{first['cost_ratio']:.3g}", f"{first['slack']:g}",
                   first["model"]]
            for fw in fws:
                i = per_fw[fw].get(name)
                row.append("" if i is None else i["route"] + ("" if i["route"] == i["model"] else " (DIFFERS)"))
            lines.append("| " + " | ".join(row) + " |")
    other = {}
    for (fw, t), layers in routes.items():
        for i in layers:
            if not (i["kind"] in LINEAR_KINDS and i.get("positions")):
                other.setdefault(f"{i['route']}", set()).add(_short(i["layer"]))
    if other:
        lines += ["", "Other layers (their routes in this run): " + "; ".join(
            f"{route}: {', '.join(sorted(names))}" for route, names in sorted(other.items())) + "."]
    errors = [f"{p['framework']} T={p['T']}: {p['layers_error']}" for p in data["points"] if p.get("layers_error")]
    if errors:
        lines += ["", "Norm routes NOT read: " + "; ".join(errors) + "."]
    lines += ["", "## Every point", "",
              "| framework | T | method | median ms | IQR ms | calls | compile ms | status |",
              "|---|---|---|---|---|---|---|---|"]
    for fw in fws:
        for t in ts:
            for m in methods:
                r = idx.get((fw, t, m))
                if r is None:
                    continue
                if _ok(r):
                    comp = "" if r.get("compile_ms") is None else f"{r['compile_ms']:.0f} ({r.get('compile_source')})"
                    lines.append(f"| {fw} | {t} | {m} | {_ms(r['median_ms'])} | {_ms(r['iqr_ms'])} | {r['repeats']} "
                                 f"| {comp} | ok |")
                else:
                    lines.append(f"| {fw} | {t} | {m} | | | | | {r['status']}: {(r.get('reason') or '')[:120]} |")
    loads = ", ".join(f"{p['framework']} T={p['T']}: {p.get('loadavg_1m_before', float('nan')):.2f}"
                      for p in data["points"])
    lines += ["", f"1-minute load average before each point: {loads}.", ""]
    return "\n".join(lines)


def _marker(method: str) -> object:
    from contract.peers import markers

    return {"dp_bk@gram": "<", "dp_bk@materialize": ">"}.get(method, markers().get(method, "o"))


def _style(method: str) -> str:
    return "--" if method == "sgd" else ":" if "@" in method else "-"


def draw(data: dict, out: Path) -> list[Path]:
    """<out>/seq_length_panel.{pdf,png}: one panel per framework (the repo's figure style: framework colour,
    a marker per method, the non-private step dashed), x = T (log 2), y = each step's median / the same framework's
    SGD step at that T (linear: the strategies differ by 1.0-3x, which a log scale of absolute ms hides); tick labels
    carry the linear layers' norm routes (G = Gram, M = materialised); the T interval where dp_ghost / dp_sgd
    crosses 1 is shaded."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FixedLocator, NullLocator

    from compare import style

    fws, ts, methods = _frameworks(data), _seq_lens(data), _methods(data)
    idx, routes = _index(data), _routes_by_point(data)
    forced = all(any(r["method"] == m for r in data["records"]) for m in FORCED)
    shade = ("dp_bk@gram", "dp_bk@materialize") if forced else ("dp_ghost", "dp_sgd")
    cross = crossovers(data, *shade)
    with style.figure_context() as plt:
        fig, axes = plt.subplots(1, len(fws), sharey=True, squeeze=False, figsize=(style.COLUMN_WIDTH_IN, 2.3),
                                 layout="constrained")
        for ax, fw in zip(axes[0], style.framework_order(fws)):
            color = style.color(fw)
            for m in methods:
                pts = [(t, idx[(fw, t, m)]["median_ms"] / idx[(fw, t, "sgd")]["median_ms"]) for t in ts
                       if _ok(idx.get((fw, t, m))) and _ok(idx.get((fw, t, "sgd")))]
                if pts:
                    ax.plot(*zip(*pts), color=color, marker=_marker(m), linestyle=_style(m), fillstyle=style.fill(fw))
            for x in cross.get(fw, {}).get("crossings", []):
                ax.axvspan(*x["between"], color="0.5", alpha=0.12, linewidth=0)
            ax.set_xscale("log", base=2)
            ax.xaxis.set_major_locator(FixedLocator(ts))
            ax.xaxis.set_minor_locator(NullLocator())
            labels = []
            for t in ts:
                g, mat = _counts(routes.get((fw, t), []))
                labels.append(f"{t}\n{g}G {mat}M" if g + mat else str(t))
            ax.set_xticklabels(labels)
            ax.set_title(style.FRAMEWORK_NAMES.get(fw, fw), loc="left", color=color, pad=2)
            ax.set_xlabel("sequence length T")
            ax.tick_params(axis="x", labelsize=5.5)
            ax.grid(axis="x", visible=False)
        axes[0][0].set_ylabel("time / own SGD step (×)")
        extra = [Line2D([], [], color="0.3", marker=_marker(m), linestyle=_style(m), label=m) for m in methods]
        extra.append(Line2D([], [], color="0.5", alpha=0.3, linewidth=5, label="crossing"))
        s = data["meta"]["config"]
        style.title(fig, "transformer", f"training steps vs sequence length, B = {s['batch_size']}")
        style.finish(fig, data["meta"], [f"{s['dtype']}; nG mM: linear layers on T positions with Gram / "
                                         "materialised norms", f"shaded: {shade[0]} / {shade[1]} crosses 1"],
                     style.handles(fws, None, extra), ncol=4)
        return style.save(fig, out, FIGURE)


def write_outputs(data: dict, out: Path, *, write_json: bool = True) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if write_json:
        (out / "panel.json").write_text(json.dumps(data, indent=1) + "\n")
        written.append(out / "panel.json")
    (out / "panel.md").write_text(markdown(data))
    written.append(out / "panel.md")
    return written + draw(data, out)
