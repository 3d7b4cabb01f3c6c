"""docs/results/study.md: the study across workloads (``compare.run --suite``): agreement per workload, ms per
step and × own SGD per run, the peer study's claims, the goals, the re-runs against the runs they re-measure,
and where the private step's time goes (breakdowns)."""
from __future__ import annotations

from pathlib import Path

from compare.benchmark.suite import markdown_tables, suite_rows
from compare.report import facts
from compare.report.claims import claims_text
from compare.report.markdown import Page, ms, span, table, words
from compare.report.sources import Paper
from compare.report.summary import SUMMARY_BATCH, agreement_reports, agreement_source
from compare.report.tables import agreement, claims, goals_at, index, ok

FIGURE_KINDS = ("time_per_batch", "dp_overhead", "overhead", "peak_memory", "agreement")
SEED_FULL = "cpu"


def _meta(paper: Paper, run: str) -> str:
    meta = paper.run(run).meta
    return (f"`{meta.get('command') or 'not recorded'}`; {len(paper.run(run).timings)} points, "
            f"{meta.get('sweep_s', 0) / 60:.1f} min" if meta.get("sweep_s") else
            f"`{meta.get('command') or 'not recorded'}`; {len(paper.run(run).timings)} points")


def _kinds(paper: Paper, run: str, model: str) -> tuple[str, ...]:
    """The figure kinds a run's data fills for ``model``: per-sample figures need per-sample points, the DP
    figure private steps, the agreement figure a report this run made (not one reused from another run)."""
    recs = [r for r in paper.run(run).timings if (r.get("model") or "seed_cnn") == model]
    if len({r["batch_size"] for r in recs}) < 3:
        return ()
    command = paper.run(run).meta.get("command") or ""
    own_agreement = "--agreement-file" not in command or f"{run}/agreement.json" in command
    kinds = {"time_per_batch": any(r["kind"] == "per_sample" for r in recs),
             "overhead": any(r["kind"] == "per_sample" for r in recs),
             "peak_memory": any(r["kind"] == "per_sample" for r in recs),
             "dp_overhead": any(r["kind"] == "dp" and r["method"] != "sgd" for r in recs),
             "agreement": own_agreement and bool(paper.run(run).agreement)}
    return tuple(k for k in FIGURE_KINDS if kinds[k])


def figures_table(page: Page, paper: Paper, run: str) -> str | None:
    rows = []
    models = list(dict.fromkeys(r.get("model") or "seed_cnn" for r in paper.run(run).timings))
    for model in models:
        base = paper.path(f"{run}/figures/{model}")
        if not base.is_dir() and len(models) == 1:
            base = paper.path(f"{run}/figures")
        kinds = _kinds(paper, run, model)
        if kinds and base.is_dir():
            rows.append([f"`{model}`", *(page.figure_link(base / f"{k}.png", k.replace("_", " "))
                                         if k in kinds and (base / f"{k}.png").is_file() else "–"
                                         for k in FIGURE_KINDS)])
    return table(["workload", *(k.replace("_", " ") for k in FIGURE_KINDS)], rows) if rows else None


def run_section(page: Page, paper: Paper, run: str) -> None:
    timings = paper.run(run).timings
    steps = paper.path(f"{run}/figures/suite_steps.png")
    page.add(f"## [`{run}`]({page.link(paper.path(run))})", _meta(paper, run) + ".",
             "ms per step (× that framework's own `sgd` at the same point); a dash: no ok point.",
             markdown_tables(suite_rows(timings)).replace("**", "#### ").replace("#### \n", "\n"))
    if steps.is_file():
        page.add(page.figure(steps, f"ms per step per workload, {run}"))
    if len({r["batch_size"] for r in timings}) > 1:
        page.add("Over the run's batch sizes (min–max):", claims(timings))
    if any(r["batch_size"] == SUMMARY_BATCH for r in timings):
        page.add(f"At B = {SUMMARY_BATCH}, against the goals:", goals_at(timings, SUMMARY_BATCH))
    figs = figures_table(page, paper, run)
    if figs:
        page.add("Figures per workload:", figs)


def rerun_section(page: Page, paper: Paper, old: str, new: str) -> None:
    """What a later run of some workloads measured against the earlier run of the same points."""
    a, b = paper.run(old), paper.run(new)
    bullets = []
    for model in dict.fromkeys(r.get("model") or "seed_cnn" for r in b.timings):
        ia, ib = index(a, model), index(b, model)
        for fw in ("torch", "jax"):
            for bsz in sorted({k[2] for k in ib if k[0] == fw}):
                s0, s1 = ia.get((fw, "sgd", bsz)), ib.get((fw, "sgd", bsz))
                k0, k1 = ia.get((fw, "dp_bk", bsz)), ib.get((fw, "dp_bk", bsz))
                if all(ok(r) for r in (s0, s1, k0, k1)) and bsz in (64, SUMMARY_BATCH):
                    bullets.append(
                        f"- `{model}` {fw}, B = {bsz}: `dp_bk` × sgd {k0['median_ms'] / s0['median_ms']:.2f} → "
                        f"{k1['median_ms'] / s1['median_ms']:.2f}; `sgd` {ms(s0['median_ms'])} → {ms(s1['median_ms'])} ms "
                        f"({s1['median_ms'] / s0['median_ms']:.2f}×), `dp_bk` {ms(k0['median_ms'])} → "
                        f"{ms(k1['median_ms'])} ms ({k1['median_ms'] / k0['median_ms']:.2f}×).")
    if bullets:
        page.add(f"### [`{new}`]({page.link(paper.path(new))}) against [`{old}`]({page.link(paper.path(old))})",
                 _meta(paper, new) + ". A ratio × sgd moves when either of its two medians moves:",
                 "\n".join(bullets))


def remeasure_section(page: Page, paper: Paper, study: str) -> None:
    if not paper.has(f"{SEED_FULL}/results.json"):
        return
    pts = facts.same_points(paper.run(SEED_FULL), paper.run(study), "seed_cnn")
    if not pts:
        return
    out = sorted(((k, r) for k, r in pts if not 0.8 <= r <= 1.25), key=lambda p: p[1])
    page.add("### The seed CNN measured twice",
             f"`{study}` against `{SEED_FULL}` (different runs, hours apart): {len(pts)} points both timed, ratio "
             f"{span([r for _, r in pts])}; {len(out)} outside 0.80–1.25: " +
             words([f"{fw} `{m}` B = {b} {r:.2f}" for (fw, m, b), r in out]) + ".")


def breakdown_section(page: Page, paper: Paper) -> None:
    rows = []
    for rel in paper.json_files:
        if "/breakdown/" not in rel:
            continue
        for r in paper.json(rel)["records"]:
            rows.append([f"`{r['model']}`", r["framework"], str(r["batch_size"]), ms(r["sgd_ms"]),
                         f"{ms(r['norms_ms'])} ({r['norms_over_sgd']:.2f}×)", f"{ms(r['bk_ms'])} ({r['bk_over_sgd']:.2f}×)",
                         f"`{rel}`"])
    if rows:
        page.add("## Where a private step's time goes",
                 "`scripts/dp_breakdown.py`: the SGD step, the per-example norms alone (forward, backward to the layer "
                 "outputs, the rules' norms) and the whole book-keeping step, one process per framework (ms, × sgd):",
                 table(["workload", "framework", "B", "sgd ms", "norms ms", "dp_bk ms", "file"], rows, "llrrrrl"))


def build(paper: Paper, out: Path) -> Page | None:
    runs = paper.study_runs
    if not runs:
        return None
    page = Page(out / "results" / "study.md")
    page.add("# The study across workloads",
             "Every workload, both frameworks, their peers (`python -m compare.run --suite fast-dpsgd`). "
             "\"Best private\" is the fastest of `dp_sgd`, `dp_ghost` and `dp_bk` at that point; the peer columns are "
             "the fastest peer step of that framework; a per-sample method is compared with its floor.")
    reports = agreement_reports(paper)
    if reports:
        page.add("## Agreement", "Each workload's newest agreement report: the largest float64 error of every method "
                 "of each framework against its own float64 loop and the reference, torch against JAX, float32 on "
                 "samples with no flipped decision, and flips explained by decision replay (reports: " +
                 words([f"`{agreement_source(paper, r)}`" for r in dict.fromkeys(run for run, _ in reports.values())])
                 + ").",
                 agreement({m: rep for m, (_, rep) in reports.items()}))
    text = claims_text(paper, SUMMARY_BATCH)
    if text:
        page.add("## The peer study's three claims",
                 "Each workload and batch size from its newest study run that covers it (ratios of medians "
                 "where the runs are unpaired):", text)
    main_run = max(runs, key=lambda r: len({x.get("model") for x in paper.run(r).timings}))
    for run in runs:
        run_section(page, paper, run)
    page.add("## Re-runs")
    for run in runs:
        if run == main_run:
            continue
        models = {r.get("model") for r in paper.run(run).timings}
        base = next((r for r in runs if r != run and runs.index(r) < runs.index(run)
                     and models <= {x.get("model") for x in paper.run(r).timings}), None)
        if base:
            rerun_section(page, paper, base, run)
    remeasure_section(page, paper, main_run)
    breakdown_section(page, paper)
    return page
