"""docs/results.md: the answers, how they were measured (protocol, intervals, verdicts), how far one run on
this machine can be trusted, what the data does not cover, and the index of the other pages."""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from compare.benchmark.config import Config
from compare.benchmark.paired import GOALS, N_BOOT, WIDE
from compare.report import facts
from compare.report.markdown import Page, num, span, words
from compare.report.sources import Paper
from compare.report.summary import summary_table

DEMO = "paired-demo/demo.json"


def protocol(page: Page, paper: Paper) -> None:
    rounds = next((f.default for f in fields(Config) if f.name == "rounds"), None)
    goals = "; ".join(f"`{k}` {'≤' if d == 'at_most' else '>'} {b:g}" for k, (b, d) in GOALS.items())
    page.add("## How it was measured", "\n".join([
        "- **One process per point.** Each (framework, method, batch size) runs in its own subprocess; only the "
        "framework-native function is timed, on inputs already on the device; warm-up and compilation are timed "
        "apart; the clock stops after `jax.block_until_ready` / `torch.cuda.synchronize()`. Peak memory is the point "
        "process's peak RSS above its RSS after imports (MB = 10^6 bytes).",
        "- **Floor.** The framework's own batched gradient (no per-sample) plus writing the per-sample output "
        "(B × parameters float32) at the best write bandwidth measured in the same run; `× floor` = 1 is the least "
        "a per-sample method can take.",
        f"- **Paired ratios.** A method and its baseline (`sgd` for a private step, the batched reference for a "
        f"per-sample method, our best private step for a peer) run in one process in interleaved rounds, order "
        f"shuffled per round (`--rounds`, default {rounds}); a ratio is the median of the per-round ratios with a "
        f"seeded percentile-bootstrap 95% interval ({N_BOOT} resamples). An interval wider than ±{WIDE:.0%} is "
        "flagged in the run's warnings.",
        f"- **Verdicts.** A goal reads **met** when the whole interval is on its side of the bound, **missed** when "
        f"the whole interval is on the other side, **undecided** when the interval straddles it. Goals: {goals}.",
        "- **Unpaired runs.** Runs written before paired timing (results schema 1) give the ratio of two medians "
        "taken in two processes: no interval and no verdict; this document marks them as unpaired.",
        "- **What pairs cannot undo.** torch runs one OpenMP thread per core; with any other runnable process on "
        "the machine, even at `nice 19`, those threads wait for each other at every parallel region, and a step "
        "made of many small ops slows by an order of magnitude while a step of few large ops barely moves. That "
        "slowdown differs between the two members of a pair, so interleaving does not cancel it: time on an idle "
        "machine. Each point records the load average before it (`loadavg_1m_before`)."]))
    if paper.has(DEMO):
        d = paper.json(DEMO)
        u, p = d["unpaired"]["ratio_b_over_a"], d["paired"]["ratio_b_over_a"]
        page.add(f"Why pairs ([`{DEMO}`]({page.link(paper.path(DEMO))}), {d['target']}; {d['background']}): unpaired "
                 f"B/A = {u['median']:.3f} [{u['ci95'][0]:.3f}, {u['ci95'][1]:.3f}], paired B/A = {p['median']:.3f} "
                 f"[{p['ci95'][0]:.3f}, {p['ci95'][1]:.3f}] over {p.get('rounds', 'unrecorded')} rounds; "
                 "the true ratio is 1.")


def trust(page: Page, paper: Paper) -> None:
    spread = facts.iqr_spread(paper, paper.runs)
    bw = facts.bandwidths(paper)
    page.add("## How far one run can be trusted", "\n".join([
        f"- Within a point: the interquartile range of the timed calls is {num(spread['median'] * 100, '.0f')}% of "
        f"the median at the median point; {spread['noisy']} of {spread['points']} ok points of the committed runs "
        f"exceed {facts.NOISY_IQR:.0%}, the largest {num(spread['max'] * 100, '.0f')}%.",
        f"- The floor's measured write bandwidth: {span(list(bw.values()), '.1f', ' GB/s')} over the "
        f"{len(bw)} runs that measured it.",
        "- Between runs: the same points measured in two runs hours apart are compared on the "
        "[study page](results/study.md#the-seed-cnn-measured-twice)."]))


def limits(page: Page, paper: Paper) -> None:
    unpaired = [r for r in paper.runs if paper.run(r).schema_version < 2]
    gpu = [r for r in paper.runs if any(t.get("device") == "cuda" for t in paper.run(r).timings)]
    failed = sorted({f"{r}: {t.get('model') or 'seed_cnn'} {t['framework']} `{t['method']}` B = {t['batch_size']} "
                     f"({t['status']})" for r in paper.study_runs for t in paper.run(r).timings
                     if t["status"] in ("timeout", "oom", "error")})
    commits = facts.commits(paper)
    cpus = sorted({p.cpu for p in paper.provenance() if p.cpu})
    page.add("## Limits", "\n".join([
        f"- Machines: {words([f'`{c}`' for c in cpus])}; no GPU result is committed"
        + (f" (GPU runs: {words(gpu)})" if gpu else "") + ". Absolute speeds are CPU-only.",
        f"- {len(unpaired)} of {len(paper.runs)} benchmark runs are unpaired (no intervals): "
        + words([f"`{r}`" for r in unpaired]) + ".",
        f"- The committed results were made at {len([c for c in commits if c != 'not recorded'])} different commits"
        f" ({sum('dirty' in c for c in commits)} with uncommitted changes); "
        f"{len(commits.get('not recorded', []))} files record no commit (see [provenance](results/provenance.md)).",
        "- Points that did not finish in the study: " + (words(failed) if failed else "none") + ".",
        *_sgd_formulation(page, paper)]))


SGD_FORMULATIONS = "perf-sgd/torch.json"


def _sgd_formulation(page: Page, paper: Paper) -> list[str]:
    """The torch SGD step's former formulation (torch.func.grad_and_value) against torch.autograd.grad, paired."""
    if not paper.has(SGD_FORMULATIONS):
        return []
    runs = paper.json(SGD_FORMULATIONS)["runs"]
    ratios = {(r["model"], r["batch_size"]): r["ratio_to_sgd"]["sgd_func_grad"]["median"]
              for run in runs for r in run["records"] if "sgd_func_grad" in r.get("ratio_to_sgd", {})}
    if not ratios:
        return []
    commits = sorted({run["meta"].get("commit", "not recorded")[:7] for run in runs})
    where = words([f"`{m}` B = {b}" for m, b in sorted(ratios)])
    return [f"- torch's `sgd` step takes its gradient by `torch.autograd.grad` from commit "
            f"{words([f'`{c}`' for c in commits])} on, and its batched reference (the floor's gradient) from a "
            "later commit; runs made before took it "
            f"through `torch.func` (`grad_and_value` / `grad`), which "
            f"[`{SGD_FORMULATIONS}`]({page.link(paper.path(SGD_FORMULATIONS))}) times at "
            f"{span(list(ratios.values()))}× the `autograd.grad` step ({where}): their torch × SGD and × floor "
            "ratios are low by up to that factor on small workloads."]


def build(paper: Paper, out: Path, pages: list[Page]) -> Page:
    page = Page(out / "results.md")
    page.add("# Results", "Per-sample gradients and DP-SGD in PyTorch (`torch.func`) and JAX/Flax NNX, measured "
             "with one protocol on the committed results under `paper/`. Every number on these pages is printed "
             "from those files by `python -m compare.report paper/ --out docs/`; `--check` fails when a page "
             "differs from what the data gives.")
    page.add("## Answers", summary_table(paper, page))
    page.add("## Pages", "\n".join(f"- [{p.lines[0].lstrip('# ')}]({page.link(p.path)})" for p in pages))
    protocol(page, paper)
    trust(page, paper)
    limits(page, paper)
    return page
