"""Book-keeping with the conv norm routes of the cost model against every conv layer materialised, paired with sgd.

  MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1099511627776 PYTHONPATH=. \
    python scripts/conv_bk_routes.py FRAMEWORK MODEL BATCH ROUNDS [OUT.json]

Steps of one workload timed in interleaved rounds (``paired_dp.paired``, 1 thread): ``sgd``, ``bk_model`` (dp_bk with
the cost model's conv routes, ``CONV_GRAM_SLACK``) and ``bk_all_mat`` (every conv layer materialised, its bk sum a
tensordot of the gradients its norm wrote). JAX steps are compiled ahead of time under their rule. (Records with a
``bk_norm_routes`` entry come from a version whose ``bk_model`` was a book-keeping conv rule, gram when
P^2 (d + p) < 16 d p; ``bk_norm_routes`` there is today's ``bk_model``.)
"""
import json
import os
import sys

import numpy as np
sys.path.insert(0, "scripts")
from paired_dp import paired, bootstrap_median, set_threads
fw, model, B, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
set_threads(fw, 1)
from compare.benchmark.targets import prepare, sync_fn
from compare.weights import init_weights
import contract.cost_model as cm
w = init_weights(0, model=model)
steps = {}
steps["sgd"] = prepare(fw, "dp", "sgd", w, B, dtype="float32", device=None, loss="nll_log_softmax", model=model)
sync = sync_fn(fw, "cpu")
ORIG = cm.slack


def _none(kind: str, positions: int) -> float:  # every conv layer materialised
    return 0.0 if kind == "conv" else ORIG(kind, positions)


VARIANTS = {"bk_model": ORIG, "bk_all_mat": _none}
for name, slack_fn in VARIANTS.items():
    cm.slack = slack_fn
    if fw == "jax":
        import jax
        jax.clear_caches()
    fn, args = prepare(fw, "dp", "dp_bk", w, B, dtype="float32", device=None, loss="nll_log_softmax", model=model)
    if fw == "torch":
        fn = (lambda f, v: (lambda *a: (setattr(cm, "slack", v), f(*a))[1]))(fn, slack_fn)
    else:
        fn = fn.lower(*args).compile()
    steps[name] = (fn, args)
t = paired(steps, sync, rounds=rounds, warmup=2)
s = np.asarray(t["sgd"])
rec = {"framework": fw, "model": model, "batch_size": B, "rounds": rounds, "threads": 1, "times_ms": t, "ratio": {}}
for k, v in t.items():
    rec["ratio"][k] = bootstrap_median(np.asarray(v) / s)
    print(fw, model, B, k, "med %.2f ms" % np.median(v), "ratio %.3f [%.3f %.3f]" % rec["ratio"][k])
if len(sys.argv) > 5:
    from compare.benchmark.results import cpu_model
    from compare.env import memory_settings
    out = sys.argv[5]
    old = json.load(open(out)) if os.path.exists(out) else {"runs": []}
    from compare.provenance import command_line, provenance

    rec["meta"] = {**provenance(command_line(None, "python scripts/conv_bk_routes.py")), "cpu": cpu_model(),
                   "memory_env": memory_settings(),
                   "loadavg_after": os.getloadavg()}
    old["runs"].append(rec)
    json.dump(old, open(out, "w"), indent=1)
