"""The linear norm's cost model on the transformer's layers at T positions, timed both ways.

A linear layer applied at T positions (input a (B, T, d), output cotangent g (B, T, p)) has two exact per-example
norms: materialise the (p x d) gradient sum_t g_t a_t^T (~T d p multiply-adds per example) or the Gram (ghost)
form sum_{t,s} <a_t,a_s><g_t,g_s> (~T^2 (d + p)). ``contract.cost_model.gram_is_cheaper(T, d, p,
LINEAR_GRAM_SLACK)`` picks one per layer. Here, for the registered transformer's widths at T in (32, 128, 512), block 0's linear
layers -- the attention's packed in-projection 256 -> 768, out_proj 256 -> 256, linear1 256 -> 1024, linear2
1024 -> 256 -- are timed with each framework's OWN linear rules forced to each form (the side's ``layer_stages``), on
the layer's real input and output cotangent (float32; the registered transformer built at seq_len = T by the side's
``variant``, torch's init after ``torch.manual_seed(0)`` given to both frameworks, a seeded batch):
  materialize  the layer's per-example gradients by its kind's rule and the squared norm of each leaf, summed (the
               engine's route for a materialised layer);
  gram         its norm rule with the linear route forced to gram (``forced_routes``).
The packed in-projection is applied by the attention module through a parameter-free child (kind "projection": a =
the attention's input, g = d loss / d qkv, the linear rules); before that rule the engine materialised it by the
vmap FALLBACK over the whole attention module, which is timed too ("fallback": vmap over examples of the attention
module's vjp on its own input and output cotangent, then the norms); the fallback's norms equal the rule's, which
checks the site's cotangent.
Protocol (as scripts/conv_cost_model.py): one warm-up call per form, then the forms INTERLEAVED r times (r = 7, or
fewer when a call is slow: max(2, min(7, 8 s / first call))), medians; one thread per framework; the forms'
norms checked to agree (1e-3 relative) before timing. JAX: each form jitted over (params, a, g), compile
excluded.

  python scripts/seq_cost_model.py [--points 32:64,128:64,512:64] [--frameworks torch,jax]
                                   [--out paper/cpu-seq-costmodel]

Writes <out>/transformer.json (every record, the machine, the versions, the threshold fit) and
<out>/transformer.md (the table). --from-json re-judges stored timings by the rules' current model.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # conv_cost_model's helpers; this checkout's packages
from conv_cost_model import _set_threads, cost_ratio, interleaved, machine, threshold_scores  # noqa: E402

LOSS = "nll_log_softmax"
LAYERS = ("in_proj", "out_proj", "linear1", "linear2")
BLOCK = "encoder.layers.0"
# Each layer's site in the block: the packed in-projection is its attention module's (kind "projection").
SITES = {"in_proj": "self_attn", "out_proj": "self_attn.out_proj", "linear1": "linear1", "linear2": "linear2"}
SHARED = "2-core machine shared with another worker's jobs (timings noisy; medians of interleaved repeats)"


def setup(framework: str, seq_len: int, batch: int) -> tuple:
    """(the side, its native params, x, y, the variant's Net): the registered transformer at seq_len T (the side's
    ``variant``), torch's init after ``torch.manual_seed(0)``, a seeded batch."""
    from compare.frameworks import side
    from compare.spec import Workload, make_batch

    api = side(framework)
    weights = side("torch").init_weights(0, "transformer", seq_len=seq_len)
    sizes = api.network_sizes("transformer")
    spec = Workload(f"transformer_T{seq_len}", (seq_len,), sizes["classes"],
                    {k: tuple(v.shape) for k, v in weights.items()}, vocab_size=sizes["vocab"])
    net = api.variant(spec, "transformer", seq_len=seq_len)
    x, y = make_batch(batch, seed=0, model=spec)
    params, xn, yn = api.native_inputs(weights, x, y, dtype="float32", device="cpu", model=net)
    return api, params, xn, yn, net


def site_arrays(framework: str, seq_len: int, batch: int) -> dict[str, tuple]:
    """{layer: (a, g)} float32 numpy of block 0 at this T, as the engine sees them (``layer_cotangents``): the
    in-projection's are its attention module's site (a = the attention's input, g = d loss / d qkv)."""
    import numpy as np

    api, params, x, y, net = setup(framework, seq_len, batch)
    inputs, cots = api.layer_cotangents(params, x, y, LOSS, net)
    return {name: (np.asarray(inputs[f"{BLOCK}.{site}"]), np.asarray(cots[f"{BLOCK}.{site}"]))
            for name, site in SITES.items()}


def points(framework: str, seq_len: int, batch: int) -> list[tuple]:
    """Each layer of ``LAYERS``: its (T, d, p) and the interleaved timings of its norm forms, through the side's
    ``layer_stages`` (the rules the engine runs); every form's norms checked against the materialised ones."""
    import numpy as np

    api, params, x, y, net = setup(framework, seq_len, batch)
    routes = {r["layer"]: r for r in api.layer_routes(params, x, y, LOSS, net)}
    out = []
    for name in LAYERS:
        layer = f"{BLOCK}.{SITES[name]}"
        stages, sync = api.layer_stages(params, x, y, LOSS, net, layer)
        fns = {"materialize": stages["norm: materialize"], "gram": stages["norm: gram"]}
        if name == "in_proj":
            fns["fallback"] = stages["norm: fallback"]
        ref = np.asarray(sync(fns["materialize"]()))
        for form, fn in fns.items():
            np.testing.assert_allclose(np.asarray(sync(fn())), ref, rtol=1e-3, err_msg=f"{framework} {name} {form}")
        a_shape, g_shape = routes[layer]["a_shape"], routes[layer]["g_shape"]
        out.append((name, (a_shape[1], a_shape[-1], g_shape[-1]), interleaved(fns, sync)))
    return out


def record(fw: str, batch: int, name: str, shape: tuple[int, int, int], timing: dict) -> dict:
    """One point judged by the rules' linear cost model (slack ``LINEAR_GRAM_SLACK``) and by slack 1."""
    from contract.cost_model import LINEAR_GRAM_SLACK, gram_is_cheaper

    t, d, p = shape
    mat, gram = timing["materialize"]["median_ms"], timing["gram"]["median_ms"]
    faster, best = ("gram" if gram < mat else "materialize"), min(mat, gram)
    out = {"framework": fw, "layer": name, "batch_size": batch, "T": t, "d": d, "p": p,
           "cost_ratio": round(cost_ratio(t, d, p), 4), "slack": LINEAR_GRAM_SLACK, "materialize_ms": round(mat, 3),
           "gram_ms": round(gram, 3), "measured_ratio": round(gram / mat, 4), "measured_faster": faster}
    for suffix, slack in (("", LINEAR_GRAM_SLACK), ("_slack1", 1.0)):
        choice = "gram" if gram_is_cheaper(t, d, p, slack) else "materialize"
        out |= {f"model_choice{suffix}": choice, f"wrong{suffix}": choice != faster,
                f"penalty{suffix}": round((gram if choice == "gram" else mat) / best, 3)}
    if "fallback" in timing:
        fb = timing["fallback"]["median_ms"]
        out |= {"fallback_ms": round(fb, 3), "fallback_vs_best": round(fb / best, 3)}
    return out | {"timings": timing}


def threshold_fit(records: list[dict]) -> dict:
    """The k minimising the mean penalty of "gram when cost_ratio < k" over all records (k at midpoints), with the
    range of k that ranks alike (``conv_cost_model.threshold_scores``)."""
    scored, best = threshold_scores(records)
    ratios = sorted({r["cost_ratio"] for r in records})
    lo = max((u for u in ratios if u < best), default=0.0)
    hi = min((u for u in ratios if u >= best), default=float("inf"))
    slack = records[0]["slack"]
    return {"slack": slack, "mean_penalty": round(scored[slack][0], 4), "wrong": scored[slack][1],
            "slack1_mean_penalty": round(scored[1.0][0], 4), "slack1_wrong": scored[1.0][1],
            "best_k": round(best, 4), "best_range": [lo, hi], "best_mean_penalty": round(scored[best][0], 4),
            "best_wrong": scored[best][1]}


def markdown(records: list[dict], info: dict, fit: dict, frameworks: list[str]) -> str:
    lines = ["# Linear norm cost model on the transformer's layers", "",
             f"`python scripts/seq_cost_model.py` on {info['cpu']} ({info['logical_cpus']} logical CPUs, "
             f"{info['threads_per_framework']} thread per framework), {SHARED}. torch {info['torch']}, jax "
             f"{info['jax']}, flax {info['flax']}, numpy {info['numpy']}, Python {info['python']}; float32, block 0 "
             "of the registered widths at seq_len T (the layers of block 1 have the same shapes).", "",
             "Each cell: materialize ms / gram ms (medians of interleaved repeats), the measured faster form; "
             f"**bold** where the rules' cost model (gram when T (d + p) < {records[0]['slack']} d p, i.e. cost "
             f"ratio T (d + p) / (d p) < {records[0]['slack']}; `contract.cost_model.LINEAR_GRAM_SLACK`) picks the slower "
             "form, with the penalty (its time / the faster one's); (k=1: xN) where slack 1 (the model before this "
             "measurement) picked the slower form. in_proj: + the vmap fallback's time (the workload's actual route "
             "for the packed in-projection, norms included) and its ratio to the faster linear form.", ""]
    head = ["layer", "T", "d", "p", "cost ratio", "model"] + [f"{fw}" for fw in frameworks]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    by = {(r["framework"], r["layer"], r["T"]): r for r in records}
    for t in sorted({r["T"] for r in records}):
        for name in LAYERS:
            first = next((r for r in records if r["layer"] == name and r["T"] == t), None)
            if first is None:
                continue
            row = [name, str(t), str(first["d"]), str(first["p"]), f"{first['cost_ratio']:.3g}",
                   first["model_choice"] + (f" (k=1: {first['model_choice_slack1'][:4]})"
                                            if first["model_choice_slack1"] != first["model_choice"] else "")]
            for fw in frameworks:
                r = by.get((fw, name, t))
                if r is None:
                    row.append("")
                    continue
                cell = (f"{r['materialize_ms']:.3g} / {r['gram_ms']:.3g} {r['measured_faster'][:4]} "
                        f"(B={r['batch_size']})")
                cell = f"**{cell} x{r['penalty']:.2f}**" if r["wrong"] else cell
                cell += f" (k=1: x{r['penalty_slack1']:.2f})" if r["wrong_slack1"] else ""
                if "fallback_ms" in r:
                    cell += f"; fallback {r['fallback_ms']:.3g} (x{r['fallback_vs_best']:.1f})"
                row.append(cell)
            lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    for key, what in (("", f"slack {records[0]['slack']} (the rules)"), ("_slack1", "slack 1 (before)")):
        wrong = [r for r in records if r[f"wrong{key}"]]
        lines.append(f"- {what}: wrong on {len(wrong)} of {len(records)} points" + (": " + "; ".join(
            f"{r['framework']} {r['layer']} T={r['T']} x{r[f'penalty{key}']:.2f}" for r in wrong) if wrong else "")
            + ".")
    lines += [
        f"- Threshold fit (gram when cost ratio < k; mean over all points of the chosen form's time / the faster "
        f"one's): slack {fit['slack']}: {fit['mean_penalty']} ({fit['wrong']} wrong); slack 1: "
        f"{fit['slack1_mean_penalty']} ({fit['slack1_wrong']} wrong); best k = {fit['best_k']} "
        f"(any k in ({fit['best_range'][0]:.3g}, {fit['best_range'][1]:.3g}] ranks alike): "
        f"{fit['best_mean_penalty']} ({fit['best_wrong']} wrong).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--points", default="32:64,128:64,512:64", help="T:B pairs")
    ap.add_argument("--frameworks", default="torch,jax")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="paper/cpu-seq-costmodel")
    ap.add_argument("--from-json", help="re-judge a transformer.json's timings by the current rules (no timing)")
    args = ap.parse_args(argv)
    _set_threads(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from compare.provenance import command_line, provenance
    frameworks = args.frameworks.split(",")
    if args.from_json:
        stored = json.loads(Path(args.from_json).read_text())
        info, command, meta = stored["machine"], stored["command"], stored.get("meta")
        records = [record(r["framework"], r["batch_size"], r["layer"], (r["T"], r["d"], r["p"]), r["timings"])
                   for r in stored["records"]]
        frameworks = list(dict.fromkeys(r["framework"] for r in records))
    else:
        info, command = machine(args.threads) | {"shared": SHARED}, command_line(argv)
        meta = provenance(command)
        records = []
        for point in args.points.split(","):
            t, b = (int(v) for v in point.split(":"))
            for fw in frameworks:
                for name, shape, timing in points(fw, t, b):
                    r = record(fw, b, name, shape, timing)
                    records.append(r)
                    print(f"{fw:5s} {name:8s} T={t:<4d} B={b:<3d} d={r['d']:<5d} p={r['p']:<5d} cost "
                          f"{r['cost_ratio']:6.3g} -> {r['model_choice']:11s} mat {r['materialize_ms']:9.2f} ms  gram "
                          f"{r['gram_ms']:9.2f} ms  faster {r['measured_faster']:11s}"
                          + (f"  fallback {r['fallback_ms']:9.2f} ms" if "fallback_ms" in r else "")
                          + (f"  WRONG x{r['penalty']:.2f}" if r["wrong"] else ""), flush=True)
    fit = threshold_fit(records)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "transformer.json").write_text(json.dumps({"meta": meta, "machine": info, "command": command, "threshold_fit": fit,
                                                      "records": records}, indent=1) + "\n")
    (out / "transformer.md").write_text(markdown(records, info, fit, frameworks))
    print(json.dumps(fit, indent=1))


if __name__ == "__main__":
    main()
