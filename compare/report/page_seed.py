"""docs/results/seed_cnn.md: the seed CNN in depth: agreement, every per-sample method and private step over
B = 16…1024, a batch that does not fit materialised, two environments side by side, DP-SGD training."""
from __future__ import annotations

from pathlib import Path

from compare.report import facts, profiles
from compare.report.markdown import Page, num, sci, span, table, words
from compare.report.sources import Paper
from compare.report.tables import FW_NAME, dp, index, ok, per_sample, versions
from compare.spec import MODELS

FULL = "cpu"  # compare.run --full: every method and private step of the seed CNN
BIG = "cpu-dp-8192"
OLD, NEW = ("versions/versions-old", "versions/versions-old-2"), ("versions/versions-new", "versions/versions-new-2")
TRAIN = ("cpu/train", "cpu/train_nm0", "cpu/train_f64_bk", "cpu/train_f64_materialize", "cpu/train_f64_devices1",
         "cpu/train_f64_devices2")
PROFILES = "versions/profiles"
FIGURES = ("time_per_batch", "overhead", "peak_memory", "agreement", "dp_overhead")


def _command(paper: Paper, run: str) -> str:
    return paper.run(run).meta.get("command") or "not recorded"


def _kink(k: dict) -> str:
    return f"sample {k['sample']} `{k['decision']}` at {k['margin']:.1f} u·S"


def agreement_section(page: Page, paper: Paper) -> None:
    rep = paper.run(FULL).agreement
    if not rep:
        return
    smooth = rep.get("smooth_max_rel_err", {})
    flips = {k: len(v) for k, v in (rep.get("flipped_samples") or {}).items() if v}
    near = rep.get("near_kinks") or []
    page.add("## Agreement", (
        f"The `--full` run checked B = {rep['batch_size']} against the float64 reference (`{rep['reference']}`), "
        f"tolerances float64 {rep['tolerance']['float64']:g}, float32 {rep['tolerance']['float32']:g}: float32 torch "
        f"≤ {sci(smooth.get('torch/float32'))}, JAX ≤ {sci(smooth.get('jax/float32'))} on samples with no flipped "
        f"decision; flipped decisions: {words([f'{k} {n}' for k, n in flips.items()]) if flips else 'none'}; "
        f"decisions flagged near a kink (none flipped unless listed above): "
        f"{words([_kink(k) for k in near]) if near else 'none'}; "
        f"overall {'within tolerance' if rep.get('ok') else '**not within tolerance**'}."),
        page.figure(paper.path(f"{FULL}/figures/agreement.png"), "agreement"))


def per_sample_section(page: Page, paper: Paper) -> None:
    run = paper.run(FULL)
    t = index(run)
    bs = facts.sizes(run)
    win, lose = facts.faster_at(run, "jax", "vmap", "loop")
    jpl = facts.floor_ratios(run, "jax", "per_layer")
    small = {b: v for b, v in jpl.items() if b <= 256}
    floors = {fw: {b: t[(fw, "per_layer", b)]["floor_ms"] for b in (64, 256) if ok(t.get((fw, "per_layer", b)))}
              for fw in ("torch", "jax")}
    best = {fw: {b: facts.best_per_sample(run, fw, b) for b in bs} for fw in ("torch", "jax")}
    page.add("## Per-sample gradients, B = " + f"{bs[0]}…{bs[-1]}",
             f"Command: `{_command(paper, FULL)}`; {len(run.timings)} points, float32, unpaired "
             "(each point's own process; the ratio to the floor is a ratio of medians).",
             page.figure(paper.path(f"{FULL}/figures/time_per_batch.png"), "time per batch"),
             "Median ms per batch (× floor) at B = 64 and 256; every batch size is in the run's `results.json`.",
             per_sample(run, (64, 256)),
             "Floors (the batched reference plus writing the per-sample output at the run's measured bandwidth): " +
             "; ".join(f"{fw} " + " / ".join(f"{v:.1f}" for v in fl.values()) + " ms" for fw, fl in floors.items()) +
             " (B = 64 / 256).")
    bullets = []
    for fw in ("torch", "jax"):
        parts = [f"B = {b}: `{r['method']}` {num(r.get('ratio_to_floor'))}×" for b, r in best[fw].items() if r]
        bullets.append(f"- Best {FW_NAME[fw]} method per batch size (× its floor): " + "; ".join(parts) + ".")
    bullets.append(f"- JAX `per_layer` × floor: {span(list(small.values()))} at B ≤ 256 "
                   f"({'; '.join(f'{v:.2f} at {b}' for b, v in small.items())}), "
                   + "; ".join(f"{v:.2f} at {b}" for b, v in jpl.items() if b > 256) + ".")
    bullets.append(f"- JAX `jit(vmap(grad))` against a Python loop of a jitted per-example gradient: faster at "
                   f"B = {words([str(b) for b in win]) if win else 'no size'}, slower at "
                   f"B = {words([str(b) for b in lose]) if lose else 'no size'}.")
    for b in (64, 256):
        bt, bj = best["torch"].get(b), best["jax"].get(b)
        rt, rj = t.get(("torch", "batched", b)), t.get(("jax", "batched", b))
        if bt and bj and ok(rt) and ok(rj):
            bullets.append(f"- B = {b}: the best torch method is {bj['median_ms'] / bt['median_ms']:.1f}× faster "
                           f"than the best JAX one; the batched references differ by "
                           f"{rj['median_ms'] / rt['median_ms']:.1f}×.")
    page.add("\n".join(bullets))
    page.add(page.figure(paper.path(f"{FULL}/figures/overhead.png"), "overhead"),
             page.figure(paper.path(f"{FULL}/figures/peak_memory.png"), "peak memory"))


def dp_section(page: Page, paper: Paper) -> None:
    run = paper.run(FULL)
    page.add("## Private steps", "Median ms per step (× that framework's `sgd` step, peak memory × sgd's) from the "
             "same run:", dp(run, (64, 256, 1024)),
             page.figure(paper.path(f"{FULL}/figures/dp_overhead.png"), "DP overhead"))
    if paper.has(f"{BIG}/results.json"):
        big = paper.run(BIG)
        t = index(big)
        (b,) = facts.sizes(big)[-1:]
        rows = []
        for fw in ("torch", "jax"):
            s, k = t.get((fw, "sgd", b)), t.get((fw, "dp_bk", b))
            if ok(s) and ok(k):
                rows.append([fw, f"{s['median_ms']:.0f}", f"{k['median_ms']:.0f}", f"{k['median_ms'] / s['median_ms']:.2f}",
                             f"{s['peak_mem_bytes'] / 1e6:.0f}", f"{k['peak_mem_bytes'] / 1e6:.0f}",
                             f"{k['peak_mem_bytes'] / s['peak_mem_bytes']:.2f}"])
        out_gb = b * MODELS["seed_cnn"].num_params * 4 / 1e9
        page.add(f"### B = {b}: a batch whose per-sample gradients would take {out_gb:.1f} GB",
                 f"`{_command(paper, BIG)}`:",
                 table(["framework", "sgd ms", "dp_bk ms", "× sgd", "sgd peak MB", "dp_bk peak MB", "× sgd"], rows,
                       "lrrrrrr"))


def versions_section(page: Page, paper: Paper) -> None:
    if not all(paper.has(f"{r}/results.json") for r in (*OLD, *NEW)):
        return
    old, new = [paper.run(r) for r in OLD], [paper.run(r) for r in NEW]
    vo, vn = old[0].meta["versions"], new[0].meta["versions"]
    ch = {(fw, m, b): facts.versions_change(paper, list(OLD), list(NEW), fw, m, b)
          for fw in ("torch", "jax") for m in ("batched", "sgd", "dp_bk", "per_layer") for b in (64, 256)}
    bk_old = [facts.ratio(r, "jax", "dp_bk", "sgd", b) for r in old for b in (64, 256)]
    bk_new = [facts.ratio(r, "jax", "dp_bk", "sgd", b) for r in new for b in (64, 256)]
    pl_old = [facts.floor_ratios(r, "jax", "per_layer").get(256) for r in old]
    pl_new = [facts.floor_ratios(r, "jax", "per_layer").get(256) for r in new]
    page.add("## Two environments, the same targets",
             f"old: Python {vo['python']}, torch {vo['torch']}, jax {vo['jax']}, flax {vo['flax']}; new: Python "
             f"{vn['python']}, torch {vn['torch']}, jax {vn['jax']}, flax {vn['flax']}. Each environment ran "
             f"`{_command(paper, NEW[0])}` {len(NEW)} times, alternating; the table is the median over each "
             "environment's rounds.", versions(old, new),
             "\n".join([
                 f"- JAX, old / new (> 1: the new versions are faster): batched reference "
                 f"{num(ch[('jax', 'batched', 64)])}× / {num(ch[('jax', 'batched', 256)])}×, SGD step "
                 f"{num(ch[('jax', 'sgd', 64)])}× / {num(ch[('jax', 'sgd', 256)])}×, `per_layer` "
                 f"{num(ch[('jax', 'per_layer', 64)])}× / {num(ch[('jax', 'per_layer', 256)])}× (B = 64 / 256).",
                 f"- torch, old / new: batched reference {num(ch[('torch', 'batched', 64)])}× / "
                 f"{num(ch[('torch', 'batched', 256)])}×, SGD step {num(ch[('torch', 'sgd', 64)])}× / "
                 f"{num(ch[('torch', 'sgd', 256)])}×.",
                 f"- JAX `dp_bk` × its own SGD step, each round at B = 64 and 256: {span(bk_old)} with jax {vo['jax']}, "
                 f"{span(bk_new)} with jax {vn['jax']}.",
                 f"- JAX `per_layer` × its floor at B = 256: {span(pl_old)} (old), {span(pl_new)} (new)."]))


def profile_section(page: Page, paper: Paper) -> None:
    base = paper.path(PROFILES)
    if not base.is_dir():
        return
    ref = sorted(base.glob("*_reference_*.txt"))
    pl = sorted(base.glob("*_per_layer_*.txt"))
    outer = sorted(base.glob("*_outer_product_*.txt"), reverse=True)
    parts = [t for t in (profiles.stage_table(page, ref), profiles.stage_table(page, pl),
                         profiles.variant_table(outer)) if t]
    if parts:
        page.add("## Where the time goes: profiles",
                 "`python -m compare.profile --method reference|per_layer --batch-size 256` (the batched gradient "
                 "with respect to subsets of the parameters isolates each convolution's backward pass; `per_layer` "
                 f"timed stage by stage) and `scripts/jax_outer_product.py` (the fc1 outer products of `per_layer` "
                 f"against a plain fill of the same buffer); median wall ms, from [`{PROFILES}`]"
                 f"({page.link(base)}).", *parts)


def training_section(page: Page, paper: Paper) -> None:
    rows = []
    for d in TRAIN:
        if not paper.has(f"{d}/train.json"):
            continue
        tr = paper.json(f"{d}/train.json")
        c, fws = tr["config"], tr["frameworks"]
        lt, lj = fws.get("torch", {}).get("loss") or [], fws.get("jax", {}).get("loss") or []
        gap = max((abs(a - b) for a, b in zip(lt, lj)), default=None)
        acc = " / ".join(f"{100 * fws[f]['test_accuracy']:.1f}%" for f in ("torch", "jax")
                         if fws.get(f, {}).get("test_accuracy") is not None)
        eps = tr.get("epsilon")
        png = paper.path(f"{d}/train_loss.png")
        rows.append([page.figure_link(png, d) if png.is_file() else d, c["dtype"], c["clipping"], str(c["noise_multiplier"]),
                     str(len(lt)), sci(gap), acc, "∞" if eps is None or eps == float("inf") else f"{eps:.2f}"])
    if rows:
        page.add("## DP-SGD training, both frameworks, same data, weights and noise",
                 table(["run", "dtype", "clipping", "σ", "steps", "largest \\|loss torch − loss JAX\\|", "test accuracy torch / JAX",
                        "ε (δ = 1e-5)"], rows, "llllrrll"))
        if paper.has(f"{TRAIN[0]}/train_loss.png"):
            page.add(page.figure(paper.path(f"{TRAIN[0]}/train_loss.png"), "DP-SGD loss curves"))


def build(paper: Paper, out: Path) -> Page | None:
    if not paper.has(f"{FULL}/results.json"):
        return None
    page = Page(out / "results" / "seed_cnn.md")
    page.add("# The seed CNN", f"The CNN of the functorch per-sample-gradients tutorial "
             f"({MODELS['seed_cnn'].num_params:,} parameters), "
             "every per-sample method and private step of both frameworks. Provenance of every file: "
             f"[provenance]({page.link(out / 'results' / 'provenance.md')}).")
    agreement_section(page, paper)
    per_sample_section(page, paper)
    dp_section(page, paper)
    versions_section(page, paper)
    profile_section(page, paper)
    training_section(page, paper)
    return page
