"""docs/results/bfloat16.md and docs/results/distributed.md: bfloat16 compute against float64 and float32,
and data-parallel runs over several devices or processes."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from compare.agreement.precision import markdown as precision_markdown
from compare.report.markdown import Page, demote, sci, table
from compare.report.sources import Paper
from compare.report.tables import index, ok


def _speed_cells(r: dict) -> list[str]:
    if "float32_ms" not in r:
        return ["–", "–", f"not run: {r.get('skipped', 'no reason recorded')}"]
    return [f"{r['float32_ms']:.1f}", f"{r['bfloat16_ms']:.1f}",
            f"{r['ratio']:.2f} [{r['ratio_90'][0]:.2f}, {r['ratio_90'][1]:.2f}]"]


def bfloat16(paper: Paper, out: Path) -> Page | None:
    page = Page(out / "results" / "bfloat16.md")
    page.add("# bfloat16 compute", "float32 master parameters, bfloat16 compute, norms and clipping in float32 "
             "(`--dtype bfloat16`; [docs/precision.md](../precision.md)).")
    found = False
    if paper.has("cpu-bf16/precision.json"):
        found = True
        d = paper.json("cpu-bf16/precision.json")
        verdicts = Counter(r.get("verdict", r.get("status")) for r in d["gradients"])
        holds = Counter(bool(r.get("holds")) for r in d["clipping"])
        page.add(f"## Against float64 (`{d['meta'].get('command', 'not recorded')}`)",
                 f"{len(d['gradients'])} (workload, framework, method) rows: "
                 + "; ".join(f"{n} {v}" for v, n in verdicts.most_common()) + f". Clipping bound: holds in "
                 f"{holds[True]} of {len(d['clipping'])} (workload, framework, strategy) rows.",
                 demote(precision_markdown(d), 3))
    for name in ("jax_ablation", "lstm_ablation"):  # written from their JSON by scripts/bf16_<name>.py
        if paper.has(f"cpu-bf16/{name}.md"):
            found = True
            page.add(demote(paper.path(f"cpu-bf16/{name}.md").read_text(), 2))
    if paper.has("cpu-bf16/speed.json"):
        found = True
        d = paper.json("cpu-bf16/speed.json")
        runs = d["runs"] if "runs" in d else [d["meta"]]  # several runs joined by --combine, or one
        flags = runs[0].get("cpu", {}).get("flags", {})
        page.add("## Speed: bfloat16 / float32, paired", "\n".join(
            [f"- `{m.get('command', 'not recorded')}` at `{m.get('commit', 'not recorded')}` "
             f"({', '.join(m.get('models', [m.get('model', '?')]))}): B = {m.get('batch_size')}, {m.get('rounds')} "
             f"paired rounds, {m.get('threads', '?')} thread(s); load average "
             f"{', '.join(f'{v:.1f}' for v in m.get('load_average', []))} on {m.get('cpu', {}).get('cpus')} CPUs"
             for m in runs]
            + [f"- CPU flags: {', '.join(f'{k} {'yes' if v else 'no'}' for k, v in flags.items())}"]
            ),
                 table(["workload", "framework", "kind", "method", "float32 ms", "bfloat16 ms",
                        "bfloat16 / float32 [90%]"],
                       [[f"`{r.get('model', runs[0].get('model', '?'))}`", r["framework"], r["kind"],
                         f"`{r['method']}`", *_speed_cells(r)] for r in d["rows"]], "llllrrr"))
    runs = sorted(r for r in paper.json_files if r.startswith("cpu-bf16-train/") and r.endswith("train.json"))
    if runs:
        found = True
        rows = []
        for rel in runs:
            tr = paper.json(rel)
            rows.append([f"`{rel.split('/')[1]}`", tr["config"]["dtype"], str(tr["config"]["seed"]),
                         *(f"{100 * tr['frameworks'][f]['test_accuracy']:.1f}%" for f in ("torch", "jax"))])
        png = paper.path("cpu-bf16-train/accuracy.png")
        page.add("## Training (`compare.train --model mnist_cnn`, three seeds per dtype)",
                 table(["run", "dtype", "seed", "torch test accuracy", "JAX test accuracy"], rows, "lllrr"))
        if png.is_file():
            page.add(page.figure(png, "test accuracy, float32 and bfloat16"))
    return page if found else None


def distributed(paper: Paper, out: Path) -> Page | None:
    page = Page(out / "results" / "distributed.md")
    page.add("# Several devices", "Data-parallel per-sample gradients and DP steps ([docs/distributed.md]"
             "(../distributed.md)). On one CPU machine the replicas share the cores: these numbers measure "
             "overhead, not speed-up.")
    found = False
    n1, n2 = "cpu-devices/n1", "cpu-devices/n2"
    if paper.has(f"{n1}/results.json") and paper.has(f"{n2}/results.json"):
        found = True
        a, b = index(paper.run(n1)), index(paper.run(n2))
        rows = [[k[0], f"`{k[1]}`", str(k[2]), f"{a[k]['median_ms']:.1f}", f"{b[k]['median_ms']:.1f}",
                 f"{b[k]['median_ms'] / a[k]['median_ms']:.2f}"] for k in a if k in b and ok(a[k]) and ok(b[k])]
        page.add(f"## One and two devices, a fixed per-device batch (`{paper.run(n2).meta.get('command')}`)",
                 table(["framework", "method", "B per device", "N = 1 ms", "N = 2 ms", "N = 2 / N = 1"], rows,
                       "llrrrr"))
    if paper.has("cpu-distributed/results.json"):
        found = True
        d = paper.json("cpu-distributed/results.json")
        rows = [[f"`{r['model']}`", str(r["batch_size"]), r["mode"],
                 *("not run on a CPU" if r.get("skipped") else f"{r[f]['step_ms']:.2f}"
                   if r.get(f) and r[f].get("step_ms") is not None else "–" for f in ("torch", "jax"))]
                for r in d["rows"]]
        skipped = sorted({r["skipped"] for r in d["rows"] if r.get("skipped")})
        page.add(f"## Every workload (`{d.get('command', 'not recorded')}`)",
                 f"Recorded note: {d.get('note', '')}" + "".join(f"; {why}" for why in skipped),
                 table(["workload", "B", "mode", "torch step ms", "JAX step ms"], rows, "lrlrr"))
    if paper.has("cpu/train_f64_devices1/train.json") and paper.has("cpu/train_f64_devices2/train.json"):
        one, two = (paper.json(f"cpu/train_f64_devices{n}/train.json") for n in (1, 2))
        gaps = {f: max(abs(x - y) for x, y in zip(one["frameworks"][f]["loss"], two["frameworks"][f]["loss"]))
                for f in ("torch", "jax")}
        page.add("## Same curve on one and two devices",
                 f"`compare.train --devices 2` against `--devices 1`, float64, noise on: max |Δloss| torch "
                 f"{sci(gaps['torch'])}, JAX {sci(gaps['jax'])} over {len(one['frameworks']['torch']['loss'])} steps.")
    return page if found else None
