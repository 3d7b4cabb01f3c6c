"""The transformer's training step against the sequence length T, at B = 64, both frameworks.

Why: a linear layer applied at T positions has two exact per-example gradient norms, the Gram ("ghost") form
(~T^2 (d + p) multiply-adds per example) and the materialised gradient (~T d p); ``contract.cost_model.
gram_is_cheaper(T, d, p, LINEAR_GRAM_SLACK)`` picks one per layer (scripts/seq_cost_model.py timed the layers alone). This panel shows what
that does to whole training steps: where the steps built on ghost norms (``dp_ghost``, ``dp_bk``) stop beating the
step that materialises per-sample gradients (``dp_sgd``) as T grows, and what each private step costs over
non-private SGD.

How: for each T in --seq-lens (default 32, 128, 512) the registered transformer's architecture
(``compare.spec.MODELS["transformer"]``) is built with seq_len = T: positions table (T, 256), every other size the
registered one (``Workload(f"transformer_T{T}", ...)`` + the side's ``variant``, as scripts/seq_cost_model.py
does). Canonical weights = torch's init after ``torch.manual_seed(--seed)`` (at T = 128
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

Norm routes (which layers take the Gram form and which are materialised at this T): each worker asks its side's
``layer_routes`` once per point on the point's own batch (every parameterised layer as the engine finds it, and
whether its kind's norm rule answers on its real input and output cotangent: no = materialise). Every linear layer
on T > 1 positions is also judged from its shapes alone, ``contract.cost_model.gram_is_cheaper(T, d, p, slack)``;
both are recorded (``route`` and ``model``; tests/test_seq_length_panel.py holds them equal), and every other
layer's route too (``compare.panels.seq_length.layer_info``; the attention's packed in-projection is the attention
module's site, kind "projection": the linear rules on d loss / d qkv). Tables and figure: ``compare.panels``.

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
import contextlib
import json
import logging
import os
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's packages, wherever the script is started from

# numpy only: no framework is imported here
from compare.frameworks import FRAMEWORKS, side  # noqa: E402
from compare.panels.points import FAILED, run_isolated, status_of, write_line  # noqa: E402
from compare.panels.seq_length import (  # noqa: E402,F401 - the panel's data functions, importable from here
    FORCED, LINEAR_KINDS, METHODS, ROUTED, crossovers, layer_info, markdown, route_summary, write_outputs, _short)

log = logging.getLogger("seq_length_panel")

LOSS = "nll_log_softmax"
DTYPE = "float32"
DEVICE = "cpu"
MIN_REPEATS = 3
ARCH_KEYS: tuple[str, ...] = ("vocab", "width", "heads", "ff", "num_layers", "classes")
DEFAULT_OUT = Path("paper/cpu-seq-panel")


# ---- the variant: the registered architecture at seq_len T ---------------------------------------------------------

def registered_arch() -> dict[str, int]:
    """The registered transformer's sizes other than seq_len (the side's ``network_sizes``)."""
    sizes = side("torch").network_sizes("transformer")
    return {k: sizes[k] for k in ARCH_KEYS}


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

    weights = side("torch").init_weights(seed, "transformer", seq_len=seq_len, **_arch(arch))
    return {k: v.astype(np.float32) for k, v in weights.items()}


def workload(seq_len: int, shapes: dict, arch: dict | None = None):
    """The variant's ``compare.spec.Workload`` (in no registry) from its canonical {name: shape}, in state_dict
    order (``canonical_weights`` gives them: ``{k: v.shape for k, v in weights.items()}``)."""
    from compare.spec import Workload

    a = _arch(arch)
    return Workload(variant_name(seq_len, arch), (seq_len,), a["classes"], {k: tuple(v) for k, v in shapes.items()},
                    vocab_size=a["vocab"])


def build_net(framework: str, spec, seq_len: int, arch: dict | None = None):
    """The framework's ``Net`` of the variant (structure only; parameters travel as native params)."""
    return side(framework).variant(spec, "transformer", seq_len=seq_len, **_arch(arch))


# ---- norm routes: each side's answer per layer (``layer_routes``), judged by the cost model -------------------------

def routes(framework: str, net, params, x, y) -> list[dict]:
    """Every parameterised layer's route on this batch (``compare.panels.seq_length.layer_info``)."""
    return [layer_info(r) for r in side(framework).layer_routes(params, x, y, LOSS, net)]


ROUTES = {fw: partial(routes, fw) for fw in FRAMEWORKS}


# ---- one (framework, T) point: the worker ------------------------------------------------------------------------

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
    from contract.cost_model import bookkeeping
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
        params, xn, yn = side(fw).native_inputs(weights, x, y, dtype=DTYPE, device=DEVICE, model=net)
        point["layers"] = ROUTES[fw](net, params, xn, yn)
        with bookkeeping():  # dp_bk chooses its linear norms by the bk rule
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
            record.update(status=status_of(err), reason=f"{type(err).__name__}: {err}"[:2000])
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
    measure_point(json.loads(spec_json), partial(write_line, result))
    return 0



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
                header = {"framework": fw, "T": seq_len, "batch_size": batch_size, "model": wl.name, "layers": None}
                out = (run_isolated(spec, point_environ, timeout, script=Path(__file__).resolve(), base=_base,
                                    header=header, extra={"T": seq_len}) if isolate else measure_point(spec))
                out["point"]["loadavg_1m_before"] = load
                points.append(out["point"])
                records += out["records"]
    return {"meta": meta, "points": points, "records": records}


# ---- tables and figure (from the data alone: --from-json gives the same) -------------------------------------------

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
