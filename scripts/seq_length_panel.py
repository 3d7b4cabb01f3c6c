"""Issue 16, item 3: the transformer's training step against the sequence length T, at B = 64, both frameworks.

Why: a linear layer applied at T positions has two exact per-example gradient norms, the Gram ("ghost") form
(~T^2 (d + p) multiply-adds per example) and the materialised gradient (~T d p); ``rules.gram_is_cheaper(T, d, p,
LINEAR_GRAM_SLACK)`` picks one per layer (scripts/seq_cost_model.py timed the layers alone). This panel shows what
that does to whole training steps: where the steps built on ghost norms (``dp_ghost``, ``dp_bk``) stop beating the
step that materialises per-sample gradients (``dp_sgd``) as T grows, and what each private step costs over
non-private SGD.

How: for each T in --seq-lens (default 32, 128, 512) the registered transformer's architecture
(``compare.spec.MODELS["transformer"]``) is built with seq_len = T: positions table (T, 256), every other size the
registered one (``Workload(f"transformer_T{T}", ...)`` + ``torch_impl.model.Net`` / ``jax_impl.model.Net.build``,
as scripts/seq_cost_model.py does). Canonical weights = torch's init after ``torch.manual_seed(--seed)`` (at T = 128
and seed 0 exactly ``compare.weights.init_weights(0, "transformer")``), written to one safetensors file per T and
loaded by both frameworks. Each (T, framework) runs in its own process (this script with ``--worker``), started with
the harness's point environment (``compare.benchmark.cli.point_env``: the parent's environment, glibc malloc
non-releasing, this checkout on PYTHONPATH; each framework's default thread pools, as ``compare.run``'s point
processes). It times the ``dp`` target kind's methods of ``compare.benchmark.targets`` (built by
``TARGETS["dp"].build``: the same step functions, hyper-parameters ``DP_HPARAMS`` and native noise as
``compare.run``; ``dp_sgd``'s per-sample gradients by ``DP_PER_SAMPLE_METHOD`` = per_layer):
  sgd       non-private: the batched gradient of the mean loss, an SGD update;
  dp_sgd    per-sample gradients materialised, clipped, summed, noised, SGD update;
  dp_ghost  ghost norms (per layer: its kind's rule, Gram or materialise by the cost model), a second backward;
  dp_bk     book-keeping: the same norms, each layer's clipped sum from the same backward;
on a seeded batch of B token sequences (``compare.spec.make_batch``), float32, loss nll_log_softmax, with the
harness's protocol (``targets.measure``: compile measured apart (JAX: lower + compile), one warm-up call, then at
least --repeats (>= 3) timed calls AND at least --min-seconds of timed calls, so the count adapts to the step: 3
where a call takes seconds (T = 512), more where it takes milliseconds; median, IQR).

Norm routes (which layers take the Gram form and which are materialised at this T): the engine's per-layer decision
is not exposed (``ghost._split`` is private), so each worker asks the rules the engine's own question the engine's
way, once per point on the point's own batch: every parameterised layer as the engine finds it
(``per_layer.param_layers`` / ``per_layer.layers``), its input a and output cotangent g
(``per_layer.output_cotangents``), and ``rules.norm_sq(layer, a, g)`` for a layer called once (None = materialise;
JAX: traced by ``jax.eval_shape``, nothing computed). Every linear layer on T > 1 positions is also judged from its
shapes alone, ``gram_is_cheaper(T, d, p, LINEAR_GRAM_SLACK)`` of that framework's rules; both are recorded (``route``
and ``model``; tests/test_seq_length_panel.py holds them equal), and every other layer's route too (the attention's
packed in-projection is the attention module's site, kind "projection": the linear rules on d loss / d qkv).

  python scripts/seq_length_panel.py [--seq-lens 32,128,512] [--batch-size 64] [--frameworks torch,jax]
                                     [--repeats 3] [--min-seconds 1] [--out paper/cpu-seq-panel]
  python scripts/seq_length_panel.py --from-json paper/cpu-seq-panel/panel.json [--out DIR]   # redraw, no timing

Writes <out>/panel.json (meta: the harness's ``make_meta`` (CPU model, cores, versions, lock, git commit, the
points' environment) + the panel's settings; one record per (framework, T, method) in the harness's record schema
plus ``T``, and for dp_ghost / dp_bk the layers' norm routes; per (framework, T) the process's start-up, threads,
load and every layer's route), <out>/panel.md (the table) and <out>/seq_length_panel.{pdf,png} (one column wide).
At T = 512, B = 64 a private step takes seconds per call on 2 cores: the default panel takes several minutes per
framework; run it on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's packages, wherever the script is started from

from compare.benchmark.targets import DP_METHODS  # noqa: E402 - numpy only: no framework imported here

log = logging.getLogger("seq_length_panel")

LOSS = "nll_log_softmax"
DTYPE = "float32"
DEVICE = "cpu"
METHODS: tuple[str, ...] = DP_METHODS  # sgd, dp_sgd, dp_ghost, dp_bk
ROUTED: tuple[str, ...] = ("dp_ghost", "dp_bk")  # the steps whose norms take the per-layer routes
LINEAR_KINDS: tuple[str, ...] = ("linear", "projection")  # kinds whose norm is Gram or materialise by the cost model
# "dp_bk@gram" / "dp_bk@materialize": the bk step with EVERY linear(-kind) layer on T positions forced to that norm
# form (``contract.cost_model.forced_routes(linear=...)`` for the point, on a freshly built Net so no cached JAX
# trace is reused): where the two cross is where ghost norms overtake materialising in a whole step.
FORCED: tuple[str, ...] = ("dp_bk@gram", "dp_bk@materialize")
MIN_REPEATS = 3
ARCH_KEYS: tuple[str, ...] = ("vocab", "width", "heads", "ff", "num_layers", "classes")
DEFAULT_OUT = Path("paper/cpu-seq-panel")
FIGURE = "seq_length_panel"
FAILED = "error"


# ---- the variant: the registered architecture at seq_len T ---------------------------------------------------------

def registered_arch() -> dict[str, int]:
    """The registered transformer's sizes other than seq_len (``torch_impl.models.transformer``'s defaults)."""
    from torch_impl.models import transformer as tf

    return {"vocab": tf.VOCAB, "width": tf.WIDTH, "heads": tf.HEADS, "ff": tf.FF, "num_layers": tf.LAYERS,
            "classes": tf.CLASSES}


def _arch(arch: dict | None) -> dict[str, int]:
    full = registered_arch() | dict(arch or {})
    unknown = set(full) - set(ARCH_KEYS)
    if unknown:
        raise ValueError(f"unknown architecture keys {sorted(unknown)}; expected some of {ARCH_KEYS}")
    return full


def variant_name(seq_len: int, arch: dict | None = None) -> str:
    return f"transformer_T{seq_len}" + ("" if _arch(arch) == registered_arch() else "_custom")


def canonical_weights(seq_len: int, arch: dict | None = None, seed: int = 0) -> dict:
    """{state_dict name: float32 array}: torch's init of the variant after ``torch.manual_seed(seed)``."""
    import numpy as np
    import torch

    from torch_impl.models.transformer import TransformerNet

    torch.manual_seed(seed)
    module = TransformerNet(seq_len=seq_len, **_arch(arch))
    return {k: v.detach().numpy().astype(np.float32).copy() for k, v in module.state_dict().items()}


def workload(seq_len: int, shapes: dict, arch: dict | None = None):
    """The variant's ``compare.spec.Workload`` (in no registry) from its canonical {name: shape}, in state_dict
    order (``canonical_weights`` gives them: ``{k: v.shape for k, v in weights.items()}``)."""
    from compare.spec import Workload

    a = _arch(arch)
    return Workload(variant_name(seq_len, arch), (seq_len,), a["classes"], {k: tuple(v) for k, v in shapes.items()},
                    vocab_size=a["vocab"])


def build_net(framework: str, spec, seq_len: int, arch: dict | None = None):
    """The framework's ``Net`` of the variant (structure only; parameters travel as native params)."""
    a = _arch(arch)
    if framework == "torch":
        from torch_impl.model import Net
        from torch_impl.models.transformer import TransformerNet

        return Net(spec, TransformerNet(seq_len=seq_len, **a))
    if framework == "jax":
        from jax_impl.model import Net
        from jax_impl.models.transformer import TransformerNet

        return Net.build(spec, lambda rngs: TransformerNet(seq_len=seq_len, **a, rngs=rngs))
    raise ValueError(f"unknown framework {framework!r}; expected torch or jax")


# ---- norm routes: the rules' per-layer answer, and the cost model from the shapes ---------------------------------

def _layer_info(framework: str, name: str, kind: str, sites: int, a_shape: tuple, g_shape: tuple,
                has_norm_rule: bool) -> dict:
    """One layer's route (what the rules answered) and, for a linear layer on T > 1 positions, the cost model's
    choice from its shapes alone (``model``; None for every other layer)."""
    from contract import cost_model

    positions = math.prod(a_shape[1:-1]) if len(a_shape) > 2 else 1
    d, p = int(a_shape[-1]), int(g_shape[-1])
    on_positions = kind in LINEAR_KINDS and positions > 1
    if not has_norm_rule:
        route = "fallback" if kind == "other" else "materialize"
    elif kind in LINEAR_KINDS:
        route = "gram" if positions > 1 else "rank_one"
    else:
        route = "rule"
    info = {"layer": name, "kind": kind, "sites": sites, "a_shape": list(a_shape[1:]), "g_shape": list(g_shape[1:]),
            "route": route, "positions": None, "d": None, "p": None, "cost_ratio": None, "slack": None,
            "model": None}
    if on_positions and sites == 1:  # the rule's slack: book-keeping's (BK_MATERIALISE_COST / T) inside bookkeeping()
        slack = cost_model.slack("linear", positions)
        info.update(positions=positions, d=d, p=p, cost_ratio=positions * (d + p) / (d * p), slack=slack,
                    model="gram" if cost_model.gram_is_cheaper(positions, d, p, slack) else "materialize")
    return info


def _torch_routes(net, params, x, y) -> list[dict]:
    import torch

    from torch_impl import rules
    from torch_impl.per_layer import output_cotangents, param_layers, site_layer

    inputs, cots = output_cotangents(params, x, y, LOSS, net)
    out = []
    with torch.no_grad():
        for name, layer in param_layers(net.module).items():
            sites = [s for s in inputs if site_layer(s) == name]
            a, g = inputs[sites[0]], cots[sites[0]]
            norm = rules.norm_sq(layer, a, g) if len(sites) == 1 else None
            out.append(_layer_info("torch", name, rules.kind_of(layer), len(sites), tuple(a.shape), tuple(g.shape),
                                   norm is not None))
    return out


def _jax_routes(net, params, x, y) -> list[dict]:
    import jax
    import jax.numpy as jnp

    from jax_impl import rules
    from jax_impl.per_layer import layers, output_cotangents, site_layer

    out: list[dict] = []

    def trace(params, x, y):  # traced only: the rules' answers are Python-level (None or an array)
        inputs, cots = output_cotangents(params, x, y, LOSS, net)
        for name, layer in layers(params, net).items():
            sites = [s for s in inputs if site_layer(s) == name]
            a, g = inputs[sites[0]], cots[sites[0]]
            norm = rules.norm_sq(layer, a, g) if len(sites) == 1 else None
            out.append(_layer_info("jax", name, rules.kind_of(layer), len(sites), tuple(a.shape), tuple(g.shape),
                                   norm is not None))
        return jnp.zeros(())

    jax.eval_shape(trace, params, x, y)
    return out


ROUTES = {"torch": _torch_routes, "jax": _jax_routes}


def route_summary(layers: list[dict]) -> dict[str, str]:
    """{layer: route} (the compact form carried by the dp_ghost / dp_bk records)."""
    return {info["layer"]: info["route"] for info in layers}


# ---- one (framework, T) point: the worker ------------------------------------------------------------------------

def _status(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}"
    return "oom" if isinstance(err, MemoryError) or "OutOfMemory" in text or "RESOURCE_EXHAUSTED" in text else FAILED


def _base(spec: dict, method: str) -> dict:
    return {"model": spec["model"], "framework": spec["framework"], "kind": "dp", "method": method,
            "batch_size": spec["batch_size"], "dtype": DTYPE, "device": DEVICE, "loss": LOSS, "chunk_size": None,
            "weights": spec["weights"]}


@contextlib.contextmanager
def _forced_route(framework: str, route: str | None):
    """Within: every linear(-kind) layer on T positions takes ``route`` ("gram" / "materialize"); None: the model."""
    if route is None:
        yield
        return
    if route not in ("gram", "materialize"):
        raise ValueError(f"unknown forced route {route!r}; expected gram or materialize")
    from contract.cost_model import forced_routes

    with forced_routes(linear=route):
        yield


def measure_point(spec: dict, emit=None) -> dict:
    """Time every method of ``spec["methods"]`` for one (framework, T) IN THIS PROCESS; returns
    {"point": {...}, "records": [...]}. ``emit(kind, obj)`` (optional) gets the point header and each record as soon
    as it exists (the worker appends them to its result file, so a killed worker keeps what it measured).

    spec: framework, T, batch_size, arch (None: registered), param_shapes (the variant's canonical {name: shape}),
    weights (safetensors path of its canonical weights), model (its name), methods, min_repeats, min_seconds,
    warmup, seed (of the batch), launched_at."""
    from compare.benchmark.point import _thread_counts, start_up  # the harness's own record of threads
    from compare.benchmark.results import failure_record
    from compare.benchmark.targets import measure, sync_fn, target
    from compare.frameworks import impl_module, per_sample_module
    from compare.spec import make_batch
    from compare.weights import load_weights

    t0 = time.perf_counter()
    fw, seq_len = spec["framework"], spec["T"]
    startup = start_up(fw, DEVICE, spec.get("launched_at"))
    wl = workload(seq_len, spec["param_shapes"], spec.get("arch"))
    weights = load_weights(spec["weights"], model=wl)  # every key, shape and dtype checked against it
    net = build_net(fw, wl, seq_len, spec.get("arch"))
    x, y = make_batch(spec["batch_size"], spec["seed"], model=wl)
    point = {"framework": fw, "T": seq_len, "batch_size": spec["batch_size"], "model": wl.name,
             "num_params": wl.num_params, "startup": startup, "layers": None, "layers_bk": None,
             "layers_error": None}
    try:
        params, xn, yn = per_sample_module(fw).native_inputs(weights, x, y, dtype=DTYPE, device=DEVICE, model=net)
        point["layers"] = ROUTES[fw](net, params, xn, yn)
        with impl_module(fw, "rules").bookkeeping():  # dp_bk chooses its linear norms by the bk rule
            point["layers_bk"] = ROUTES[fw](net, params, xn, yn)
        del params, xn, yn
    except Exception as err:  # noqa: BLE001 - recorded; the timings still run
        log.exception("%s T=%d: the norm routes could not be read", fw, seq_len)
        point["layers_error"] = f"{type(err).__name__}: {err}"[:2000]
    if emit:
        emit("point", point)
    tgt, sync = target("dp"), sync_fn(fw, DEVICE)
    records = []
    for method in spec["methods"]:
        base, _, forced = method.partition("@")
        record = failure_record(_base(spec, method), FAILED, "")
        record.update(T=seq_len, forced_route=forced or None, **tgt.details(fw, base))
        try:
            with _forced_route(fw, forced or None):
                step_net = build_net(fw, wl, seq_len, spec.get("arch")) if forced else net
                fn, args = tgt.build(fw, base, weights, x, y, dtype=DTYPE, device=DEVICE, loss=LOSS,
                                     chunk_size=None, model=step_net)
                timing = measure(fn, args, sync, min_repeats=spec["min_repeats"], min_seconds=spec["min_seconds"],
                                 warmup=spec["warmup"])
            record.update(median_ms=timing.median_ms, iqr_ms=timing.iqr_ms, min_ms=timing.min_ms,
                          repeats=timing.repeats, compile_ms=timing.compile_ms, first_call_ms=timing.first_call_ms,
                          compile_source=timing.compile_source, times_ms=list(timing.times_ms), status="ok")
            del fn, args
        except Exception as err:  # noqa: BLE001 - a failing point is data, the panel goes on
            log.exception("%s T=%d %s failed", fw, seq_len, method)
            record.update(status=_status(err), reason=f"{type(err).__name__}: {err}"[:2000])
        if method == "dp_bk" and point.get("layers_bk") is not None:
            record["norm_routes"] = route_summary(point["layers_bk"])
        elif method in ROUTED and point["layers"] is not None:
            record["norm_routes"] = route_summary(point["layers"])
        elif forced and point["layers"] is not None:
            record["norm_routes"] = {k: (forced if i["kind"] in LINEAR_KINDS and i.get("positions") else i["route"])
                                     for k, i in ((i["layer"], i) for i in point["layers"])}
        log.info("%-5s T=%-4d B=%-3d %-8s %s", fw, seq_len, spec["batch_size"], method,
                 f"{record['median_ms']:.2f} ms (IQR {record['iqr_ms']:.2f}, {record['repeats']} calls)"
                 if record["status"] == "ok" else f"{record['status']}: {record['reason'][:200]}")
        records.append(record)
        if emit:
            emit("record", record)
    point.update(threads=_thread_counts(), wall_s=time.perf_counter() - t0)
    if emit:
        emit("done", {"threads": point["threads"], "wall_s": point["wall_s"]})
    return {"point": point, "records": records}


def _worker(spec_json: str, result: Path) -> int:
    """``--worker``: measure one point, appending JSON lines ({"kind": ..., "data": ...}) to ``result``."""
    def emit(kind: str, obj: dict) -> None:
        with open(result, "a") as fh:
            fh.write(json.dumps({"kind": kind, "data": obj}) + "\n")
            fh.flush()

    measure_point(json.loads(spec_json), emit)
    return 0


def _read_lines(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    text = path.read_text()
    return [json.loads(line) for line in text[:text.rfind("\n") + 1].splitlines() if line]


def _run_forwarding(cmd: list[str], env: dict[str, str], timeout: float) -> tuple[int | None, str]:
    """Run ``cmd``, copying its stderr (the worker's progress log) to ours line by line; (exit code, or None after
    a timeout kill; its last 5 stderr lines)."""
    tail: collections.deque[str] = collections.deque(maxlen=5)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def pump() -> None:
        for line in proc.stderr:
            tail.append(line.rstrip("\n"))
            sys.stderr.write(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        code = None
    reader.join(timeout=10)
    return code, "\n".join(tail)


def run_isolated(spec: dict, env: dict[str, str], timeout: float) -> dict:
    """``measure_point(spec)`` in a fresh process; a crash, kill or timeout becomes failure records of the methods
    it did not finish (status timeout / oom / error, with why)."""
    from compare.benchmark.results import failure_record

    with tempfile.TemporaryDirectory(prefix="seq-panel-") as tmp:
        result = Path(tmp) / "point.jsonl"
        spec = {**spec, "launched_at": time.time()}
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec), "--result", str(result)]
        fate, t0 = None, time.perf_counter()
        code, tail = _run_forwarding(cmd, env, timeout)
        if code is None:
            fate = ("timeout", f"no result within {timeout:g} s (process killed)")
        elif code == -9:
            fate = ("oom", "killed by SIGKILL (most likely the out-of-memory killer)")
        elif code != 0:
            fate = (FAILED, f"exit code {code}: {tail}")
        lines = _read_lines(result)
    point = next((ln["data"] for ln in lines if ln["kind"] == "point"), None) or {
        "framework": spec["framework"], "T": spec["T"], "batch_size": spec["batch_size"], "model": spec["model"],
        "layers": None, "layers_error": fate[1] if fate else "no point header"}
    done = next((ln["data"] for ln in lines if ln["kind"] == "done"), {})
    point.update(done, process_wall_s=time.perf_counter() - t0, process_failure=fate and list(fate))
    records = [ln["data"] for ln in lines if ln["kind"] == "record"]
    have = {r["method"] for r in records}
    for method in spec["methods"]:
        if method not in have:
            status, reason = fate or (FAILED, "the worker ended without a record")
            records.append(failure_record(_base(spec, method), status, reason, T=spec["T"]))
    return {"point": point, "records": records}


# ---- the panel -----------------------------------------------------------------------------------------------------

def run_panel(seq_lens: list[int], batch_size: int, frameworks: list[str], *, arch: dict | None = None,
              methods: tuple[str, ...] = METHODS, min_repeats: int = MIN_REPEATS, min_seconds: float = 1.0,
              warmup: int = 1, seed: int = 0, isolate: bool = True, timeout: float = 3600.0,
              malloc: str = "nonreleasing", env: tuple[tuple[str, str], ...] = (), argv: list[str] | None = None,
              ) -> dict:
    """Every (T, framework) point, T-major (both frameworks of one T one after the other); returns the panel's data
    (what panel.json holds). ``isolate``: each point in its own process (the CLI always; tests may run in-process)."""
    from compare.benchmark.cli import point_env
    from compare.benchmark.config import Config
    from compare.benchmark.results import make_meta
    from compare.benchmark.targets import DP_HPARAMS, DP_PER_SAMPLE_METHOD, NOISE_SEED
    from compare.weights import save_weights

    if min_repeats < MIN_REPEATS:
        raise ValueError(f"need at least {MIN_REPEATS} timed calls per point, got {min_repeats}")
    cfg = Config(weights=None, out=DEFAULT_OUT, batch_sizes=(batch_size,), frameworks=tuple(frameworks),
                 methods=tuple(methods), dtype=DTYPE, device=DEVICE, repeats=min_repeats, min_seconds=min_seconds,
                 timeout=timeout, resume=False, full=False, loss=LOSS, seed=seed, agreement_batch_size=batch_size,
                 agreement=False, figures=True, malloc=malloc, env=tuple(env), group_points="none")
    point_environ = point_env(cfg)
    settings = {"seq_lens": list(seq_lens), "batch_size": batch_size, "frameworks": list(frameworks),
                "methods": list(methods), "arch": _arch(arch), "registered_arch": _arch(arch) == registered_arch(),
                "weights_seed": seed, "batch_seed": seed, "dtype": DTYPE, "loss": LOSS, "device": DEVICE,
                "min_repeats": min_repeats, "min_seconds": min_seconds, "warmup": warmup, "isolate": isolate,
                "timeout_s": timeout, "malloc": malloc, "dp_hparams": DP_HPARAMS,
                "per_sample_method": DP_PER_SAMPLE_METHOD, "noise_seed": NOISE_SEED}
    meta = make_meta(argv=[], device=DEVICE, env=point_environ, config=settings)
    meta["command"] = " ".join(["python scripts/seq_length_panel.py", *(argv if argv is not None else sys.argv[1:])])
    points, records = [], []
    with tempfile.TemporaryDirectory(prefix="seq-panel-weights-") as tmp:
        for seq_len in seq_lens:
            weights = canonical_weights(seq_len, arch, seed)
            shapes = {k: list(v.shape) for k, v in weights.items()}
            wl = workload(seq_len, shapes, arch)
            path = save_weights(Path(tmp) / f"{wl.name}_seed{seed}.safetensors", weights, model=wl)
            for fw in frameworks:
                spec = {"framework": fw, "T": seq_len, "batch_size": batch_size, "arch": arch,
                        "param_shapes": shapes, "weights": str(path),
                        "model": wl.name, "methods": list(methods), "min_repeats": min_repeats,
                        "min_seconds": min_seconds, "warmup": warmup, "seed": seed}
                load = os.getloadavg()[0]
                log.info("%s T=%d B=%d: %s", fw, seq_len, batch_size, "own process" if isolate else "in process")
                out = run_isolated(spec, point_environ, timeout) if isolate else measure_point(spec)
                out["point"]["loadavg_1m_before"] = load
                points.append(out["point"])
                records += out["records"]
    return {"meta": meta, "points": points, "records": records}


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
        "# The transformer's training step vs sequence length T (issue 16)", "",
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


def _marker(method: str) -> str:
    from compare.benchmark.figures import MARKERS

    return {"dp_bk@gram": "<", "dp_bk@materialize": ">"}.get(method, MARKERS.get(method, "o"))


def _style(method: str) -> str:
    return "--" if method == "sgd" else ":" if "@" in method else "-"


def draw(data: dict, out: Path) -> list[Path]:
    """<out>/seq_length_panel.{pdf,png}: one panel per framework (the repo's figure style: framework colour,
    a marker per method, the non-private step dashed), x = T (log 2), y = each step's median / the same framework's
    SGD step at that T (linear: the strategies differ by 1.0-3x, which a log scale of absolute ms hides); tick labels
    carry the linear layers' norm routes (G = Gram, M = materialised); the T interval where dp_ghost / dp_sgd
    crosses 1 is shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FixedLocator, NullLocator

    from compare.benchmark.figures import COLORS, COLUMN_WIDTH_IN, RC

    fws, ts, methods = _frameworks(data), _seq_lens(data), _methods(data)
    idx, routes = _index(data), _routes_by_point(data)
    forced = all(any(r["method"] == m for r in data["records"]) for m in FORCED)
    shade = ("dp_bk@gram", "dp_bk@materialize") if forced else ("dp_ghost", "dp_sgd")
    cross = crossovers(data, *shade)
    written = []
    with plt.rc_context(RC):
        fig, axes = plt.subplots(1, len(fws), sharey=True, squeeze=False, figsize=(COLUMN_WIDTH_IN, 2.6))
        for ax, fw in zip(axes[0], fws):
            color = COLORS.get(fw, "k")
            for m in methods:
                pts = [(t, idx[(fw, t, m)]["median_ms"] / idx[(fw, t, "sgd")]["median_ms"]) for t in ts
                       if _ok(idx.get((fw, t, m))) and _ok(idx.get((fw, t, "sgd")))]
                if pts:
                    ax.plot(*zip(*pts), color=color, marker=_marker(m), linestyle=_style(m),
                            fillstyle="none" if fw == "jax" else "full")
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
            ax.set_title(fw, loc="left", fontsize=7, color=color, pad=2)
            ax.set_xlabel("sequence length T")
            ax.tick_params(axis="x", labelsize=5.5)
        axes[0][0].set_ylabel("time / own SGD step")
        for ax in axes[0]:
            ax.grid(axis="y", color="0.9", linewidth=0.5)
        handles = [Line2D([], [], color="0.3", marker=_marker(m), linestyle=_style(m), label=m) for m in methods]
        handles.append(Line2D([], [], color="0.5", alpha=0.3, linewidth=5, label="crossing"))
        rows = 1 if len(handles) <= 5 else 2
        fig.tight_layout(rect=(0, 0.2 + 0.05 * (rows - 1), 1, 1), w_pad=0.6)
        fig.legend(handles=handles, loc="center", ncol=math.ceil(len(handles) / rows), frameon=False,
                   handlelength=1.6, columnspacing=0.8, handletextpad=0.5, bbox_to_anchor=(0.5, 0.13 + 0.025 * (rows - 1)),
                   fontsize=5.5)
        v, s = data["meta"].get("versions", {}), data["meta"]["config"]
        fig.text(0.01, 0.06, f"transformer, B={s['batch_size']}, {s['dtype']}; {data['meta'].get('device', '?')}; "
                 f"torch {v.get('torch')}, jax {v.get('jax')}\nnG mM: of the linear layers on T positions, n with "
                 f"Gram, m with materialised norms\nshaded: where {shade[0]} / {shade[1]} crosses 1", fontsize=4.5,
                 color="0.35", ha="left", va="top")
        out.mkdir(parents=True, exist_ok=True)
        for ext in ("pdf", "png"):
            target = out / f"{FIGURE}.{ext}"
            fig.savefig(target, dpi=300)
            written.append(target)
        plt.close(fig)
    return written


def write_outputs(data: dict, out: Path, *, write_json: bool = True) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if write_json:
        (out / "panel.json").write_text(json.dumps(data, indent=1) + "\n")
        written.append(out / "panel.json")
    (out / "panel.md").write_text(markdown(data))
    written.append(out / "panel.md")
    return written + draw(data, out)


# ---- command line --------------------------------------------------------------------------------------------------

def _ints(text: str) -> list[int]:
    try:
        items = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not items or min(items) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return items


def _methods_arg(text: str) -> list[str]:
    names = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in names if m not in METHODS + FORCED]
    if not names or bad:
        raise argparse.ArgumentTypeError(f"unknown method(s) {bad}; expected from {METHODS + FORCED}")
    return names


def _frameworks_arg(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in ("torch", "jax")]
    if not items or bad:
        raise argparse.ArgumentTypeError(f"expected some of torch,jax; got {text!r}")
    return items


def _arch_arg(text: str) -> dict[str, int]:
    out = {}
    for item in (t.strip() for t in text.split(",") if t.strip()):
        key, sep, value = item.partition("=")
        if not sep or key not in ARCH_KEYS or not value.isdigit() or int(value) < 1:
            raise argparse.ArgumentTypeError(f"expected KEY=N[,KEY=N...] with keys from {ARCH_KEYS}, got {item!r}")
        out[key] = int(value)
    return out


def main(argv: list[str] | None = None) -> int:
    from compare.benchmark.cli import _env_pair  # compare.run's --env parser, shared
    from compare.paths import output_dir

    p = argparse.ArgumentParser(prog="scripts/seq_length_panel.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seq-lens", type=_ints, default=[32, 128, 512], help="T values (default 32,128,512)")
    p.add_argument("--methods", type=_methods_arg, default=list(METHODS + FORCED),
                   help=f"default {','.join(METHODS + FORCED)}")
    p.add_argument("--batch-size", type=int, default=64, help="B (default 64)")
    p.add_argument("--frameworks", type=_frameworks_arg, default=["torch", "jax"], help="default torch,jax")
    p.add_argument("--repeats", type=int, default=MIN_REPEATS, help=f"minimum timed calls per point (>= {MIN_REPEATS})")
    p.add_argument("--min-seconds", type=float, default=1.0, help="minimum timed seconds per point (default 1)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls after the first (default 1, as the harness)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights' init and of the batch (default 0)")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds before a (framework, T) process is killed")
    p.add_argument("--malloc", choices=("nonreleasing", "system"), default="nonreleasing",
                   help="glibc malloc setting of the point processes (compare.run's --malloc; default nonreleasing)")
    p.add_argument("--env", type=_env_pair, action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment variable for every point process (repeatable), as compare.run's --env")
    p.add_argument("--arch", type=_arch_arg, help="other sizes than the registered ones, e.g. width=8,heads=2,ff=12,"
                   "num_layers=1 (a quick check of the script; the tables then say CUSTOM)")
    p.add_argument("--out", type=output_dir, help=f"output directory (default {DEFAULT_OUT}; with --from-json: the "
                   "JSON's directory)")
    p.add_argument("--from-json", type=Path, help="redraw panel.md and the figure from a stored panel.json (no timing)")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # one point's spec (JSON), run by run_isolated
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if a.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if a.worker is not None:
        if a.result is None:
            p.error("--worker needs --result")
        return _worker(a.worker, a.result)
    if a.from_json:
        data = json.loads(a.from_json.read_text())
        out = a.out or a.from_json.parent
        for path in write_outputs(data, out, write_json=out.resolve() != a.from_json.parent.resolve()):
            log.info("wrote %s", path)
        return 0
    if a.repeats < MIN_REPEATS:
        p.error(f"--repeats must be >= {MIN_REPEATS}")
    if a.batch_size < 1 or a.min_seconds < 0 or a.warmup < 0 or a.timeout <= 0:
        p.error("need --batch-size >= 1, --min-seconds >= 0, --warmup >= 0, --timeout > 0")
    out = a.out or DEFAULT_OUT
    data = run_panel(a.seq_lens, a.batch_size, a.frameworks, arch=a.arch, methods=tuple(a.methods),
                     min_repeats=a.repeats,
                     min_seconds=a.min_seconds, warmup=a.warmup, seed=a.seed, timeout=a.timeout, malloc=a.malloc,
                     env=tuple(a.env), argv=sys.argv[1:] if argv is None else argv)
    for path in write_outputs(data, out):
        log.info("wrote %s", path)
    print(markdown(data))
    failed = [r for r in data["records"] if r["status"] != "ok"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
