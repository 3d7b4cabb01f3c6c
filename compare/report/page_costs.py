"""docs/results/costs.md: the cost models that pick a per-layer norm route (Gram or materialise), measured
against their choices, the sequence-length panels, and the profiles behind the per-sample floors."""
from __future__ import annotations

from pathlib import Path

from compare.panels.seq_length import markdown as panel_markdown
from compare.report.markdown import Page, demote, table
from compare.report.sources import Paper


def cost_model(page: Page, paper: Paper, rel: str, title: str) -> None:
    d = paper.json(rel)
    fit, recs = d["threshold_fit"], d["records"]
    wrong = [r for r in recs if r.get("wrong")]
    shape = "T" if "T" in recs[0] else "P"
    page.add(f"### {title} ([`{rel}`]({page.link(paper.path(rel))}))",
             f"`{d.get('command', 'not recorded')}`; {d['machine'].get('cpu', 'CPU not recorded')}, "
             f"{d['machine'].get('threads_per_framework', '')} thread(s) per framework"
             + (f"; {d['machine']['shared']}" if d["machine"].get("shared") else "") + ". "
             f"{len(recs)} points. With the rules' slack {fit['slack']}: {fit['wrong']} points where the model picks "
             f"the slower form, mean penalty {fit['mean_penalty']:.3f}×; with slack 1: {fit['slack1_wrong']} points, "
             f"mean penalty {fit['slack1_mean_penalty']:.3f}×; best fitted slack {fit['best_k']:.2f}.",
             table(["framework", "workload", "layer", "B", shape, "d", "p", "cost ratio", "materialise ms", "Gram ms",
                    "faster", "model picks"],
                   [[r["framework"], r.get("model", "transformer"), r["layer"], str(r["batch_size"]), str(r[shape]),
                     str(r["d"]), str(r["p"]), f"{r['cost_ratio']:.3g}", f"{r['materialize_ms']:.3g}",
                     f"{r['gram_ms']:.3g}", r["measured_faster"], r["model_choice"] + (" ⚠" if r.get("wrong") else "")]
                    for r in (wrong or recs)], "lllrrrrrrrll")
             if wrong else "The model picks the faster form at every point.")


def lstm_profile(page: Page, paper: Paper, rel: str) -> None:
    d = paper.json(rel)
    rows = [[fw, stage, f"{v:.1f}"] for fw, stages in d["results"].items() for stage, v in stages.items()
            if isinstance(v, (int, float))]
    page.add(f"### The LSTM's private step, stage by stage ([`{rel}`]({page.link(paper.path(rel))}))",
             f"`{d['script']}`, B = {d['batch_size']}, T = {d['T']}, {d['dtype']}; {d['statistic']}; {d['machine']}; "
             f"torch threads {d['torch_threads']}.", table(["framework", "stage", "ms"], rows, "llr"))


def jax_profiles(page: Page, paper: Paper) -> None:
    rels = [r for r in paper.json_files if "/profiles/" in r and r.endswith(".json")]
    rows = []
    for rel in rels:
        data = paper.json(rel)  # {"meta", "records"}; files written before the meta was recorded are a bare list
        for r in data["records"] if isinstance(data, dict) else data:
            rows.append([f"`{r['model']}`", r["framework"], f"`{r['method']}`", str(r["batch_size"]), r["stage"],
                         f"{r['wall_ms']:.1f}", f"{r['cpu_ms']:.1f}"])
    if rows:
        page.add("### Per-sample stages (`python -m compare.profile --json`)",
                 table(["workload", "framework", "method", "B", "stage", "wall ms", "CPU ms"], rows, "llllrrr"))


def build(paper: Paper, out: Path) -> Page | None:
    page = Page(out / "results" / "costs.md")
    page.add("# Cost models, panels and profiles",
             "Where two exact forms of a layer's per-example norm exist (materialise the per-example gradient, or "
             "the Gram form over positions), a cost model picks one per layer; these files measure both forms "
             "against its choice.")
    found = False
    page.add("## Norm routes: Gram or materialise")
    for rel, title in (("cpu-costmodel/costmodel.json", "Convolutions, every workload"),
                       ("cpu-seq-costmodel/transformer.json", "The transformer's linear layers, 1 thread"),
                       ("cpu-seq-costmodel-2t/transformer.json", "The transformer's linear layers, 2 threads")):
        if paper.has(rel):
            found = True
            cost_model(page, paper, rel, title)
    for rel in sorted(r for r in paper.json_files if r.endswith("panel.json")):
        found = True
        d = paper.json(rel)
        png = paper.path(rel).with_name("seq_length_panel.png")
        page.add(f"## Sequence-length panel: [`{rel}`]({page.link(paper.path(rel))})",
                 f"`{d['meta'].get('command', 'not recorded')}`.",
                 demote(panel_markdown(d), 3))
        if png.is_file():
            page.add(page.figure(png, f"steps against T, {rel}"))
    page.add("## Profiles")
    if paper.has("cpu-lstm/profile.json"):
        found = True
        lstm_profile(page, paper, "cpu-lstm/profile.json")
    jax_profiles(page, paper)
    return page if found else None
