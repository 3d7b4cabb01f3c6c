"""scripts/seq_length_panel.py: the variant it builds, the norm routes it records, its records,
its tables and figure, and --from-json.

Small: the timed runs use a tiny variant (width 8, 1 block, T = 4, B = 2; the same model classes), both frameworks
in this process, and torch once through the command line (its point in its own process). What can fail: the variant
is not the registered architecture; the recorded Gram / materialise routes disagree with ``gram_is_cheaper`` (on
the tiny variant at T = 4 / 7 / 8, where the routes flip with LINEAR_GRAM_SLACK = 1.6, and on the registered one at
the panel's T = 32 / 128 / 512); a method does not time; a killed point is lost; --from-json does not give the same
table. Measured on the shared 2-core box: ~20 s with ``-m "not slow"``, ~45 s in all (JAX compiling four steps).
"""
from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from compare.frameworks import FRAMEWORKS, impl_module, per_sample_module
from contract import cost_model
from compare.spec import MODELS, make_batch
from compare.weights import init_weights

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "seq_length_panel.py"
TINY = {"vocab": 11, "width": 8, "heads": 2, "ff": 12, "num_layers": 1, "classes": 3}


def _load():
    spec = importlib.util.spec_from_file_location("seq_length_panel", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("seq_length_panel", module)
    spec.loader.exec_module(module)
    return module


panel = _load()


def routes(fw: str, seq_len: int, arch: dict | None, batch: int = 1) -> list[dict]:
    """The script's route reading for one (framework, T) on the seeded variant."""
    weights = panel.canonical_weights(seq_len, arch)
    wl = panel.workload(seq_len, {k: v.shape for k, v in weights.items()}, arch)
    net = panel.build_net(fw, wl, seq_len, arch)
    x, y = make_batch(batch, 0, model=wl)
    params, xn, yn = per_sample_module(fw).native_inputs(weights, x, y, model=net)
    return panel.ROUTES[fw](net, params, xn, yn)


def expected_choice(fw: str, t: int, d: int, p: int) -> str:
    return "gram" if cost_model.gram_is_cheaper(t, d, p, cost_model.LINEAR_GRAM_SLACK) else "materialize"


def linear_on_positions(layers: list[dict]) -> dict[str, dict]:
    return {i["layer"]: i for i in layers if i["kind"] in panel.LINEAR_KINDS and i["positions"]}


# ---- the variant ---------------------------------------------------------------------------------------------

def test_variant_is_the_registered_transformer_with_T_positions():
    """At T = 128 the variant's weights are the registered workload's init bit for bit; at T = 32 every shape is
    the registered one except the positions table (32, 256)."""
    reg = MODELS["transformer"].param_shapes
    w128 = panel.canonical_weights(128)
    ref = init_weights(0, "transformer")
    assert list(w128) == list(ref) and all(np.array_equal(w128[k], ref[k]) for k in ref)
    w32 = panel.canonical_weights(32)
    assert {k: v.shape for k, v in w32.items()} == {**reg, "pos_embedding.weight": (32, 256)}
    assert panel.variant_name(32) == "transformer_T32"
    assert panel.workload(32, {k: v.shape for k, v in w32.items()}).input_shape == (32,)


# ---- norm routes = the cost model ------------------------------------------------------------------------------

@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_routes_flip_where_the_cost_model_says_on_the_tiny_variant(fw: str):
    """Width 8, MLP 12: out_proj (8 -> 8) takes the Gram form below T = 6.4, linear1 / linear2 (8 <-> 12) below
    T = 7.68 (slack 1.6): all Gram at T = 4, out_proj alone materialised at T = 7, all materialised at T = 8.
    Every recorded route = the rules' ``gram_is_cheaper`` from the shapes; fc (one position) rank one; the
    attention module (its packed in-projection 8 -> 24, kind "projection": Gram below T = 9.6) a linear layer."""
    expected = {4: {"self_attn": "gram", "out_proj": "gram", "linear1": "gram", "linear2": "gram"},
                7: {"self_attn": "gram", "out_proj": "materialize", "linear1": "gram", "linear2": "gram"},
                8: {"self_attn": "gram", "out_proj": "materialize", "linear1": "materialize", "linear2": "materialize"}}
    for t, want in expected.items():
        layers = routes(fw, t, TINY, batch=2)
        on_t = linear_on_positions(layers)
        assert {panel._short(n).split(".")[-1]: i["route"] for n, i in on_t.items()} == want, (fw, t)
        for name, i in on_t.items():
            assert i["positions"] == t and i["route"] == i["model"] == expected_choice(fw, t, i["d"], i["p"]), name
        by = {i["layer"]: i for i in layers}
        assert by["fc"]["route"] == "rank_one" and by["encoder.layers.0.self_attn"]["kind"] == "projection"


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_routes_of_the_registered_transformer_at_the_panels_T(fw: str):
    """What the default panel will record: the 8 linear-kind layers on positions (in-projection, out_proj,
    linear1, linear2 of 2 blocks) all Gram at T = 32 and 128, all materialised at T = 512 (cost ratio 2.5-4 >
    1.6); route = model."""
    for t, want in ((32, "gram"), (128, "gram"), (512, "materialize")):
        on_t = linear_on_positions(routes(fw, t, None))
        assert len(on_t) == 8 and {i["route"] for i in on_t.values()} == {want}, (fw, t)
        assert all(i["model"] == i["route"] == expected_choice(fw, t, i["d"], i["p"]) for i in on_t.values())


# ---- a timed panel (tiny, in this process) -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_panel() -> dict:
    return panel.run_panel([4], 2, list(FRAMEWORKS), arch=TINY, min_seconds=0.0, warmup=0, isolate=False, argv=[])


@pytest.mark.slow  # ~20 s: JAX compiles four training steps (the fixture), torch's first calls
def test_every_method_times_in_both_frameworks(tiny_panel: dict):
    records = tiny_panel["records"]
    assert [(r["framework"], r["T"], r["method"]) for r in records] == \
        [(fw, 4, m) for fw in FRAMEWORKS for m in ("sgd", "dp_sgd", "dp_ghost", "dp_bk")]
    for r in records:
        assert r["status"] == "ok", r["reason"]
        assert r["kind"] == "dp" and r["batch_size"] == 2 and r["dtype"] == "float32" and r["loss"] == "nll_log_softmax"
        assert math.isfinite(r["median_ms"]) and r["median_ms"] > 0 and r["iqr_ms"] >= 0
        assert r["repeats"] >= 3 and len(r["times_ms"]) == r["repeats"] and all(t > 0 for t in r["times_ms"])
        assert r["compile_ms"] is not None and r["compile_ms"] >= 0
    points = {(p["framework"], p["T"]): p for p in tiny_panel["points"]}
    assert set(points) == {(fw, 4) for fw in FRAMEWORKS}
    for r in records:  # the ghost steps carry the point's routes; the others do not
        layers = points[(r["framework"], 4)]["layers"]
        assert r.get("norm_routes") == (panel.route_summary(layers) if r["method"] in panel.ROUTED else None)
    meta = tiny_panel["meta"]
    assert meta["device"] and meta["cores"] >= 1 and meta["versions"]["torch"] and meta["versions"]["jax"]
    assert meta["config"]["arch"] == TINY and not meta["config"]["registered_arch"]


@pytest.mark.slow  # shares the fixture above
def test_from_json_gives_the_same_table_and_figure(tiny_panel: dict, tmp_path: Path):
    first = tmp_path / "run"
    written = panel.write_outputs(tiny_panel, first)
    assert {p.name for p in written} == {"panel.json", "panel.md", "seq_length_panel.pdf", "seq_length_panel.png"}
    md = (first / "panel.md").read_text()
    assert "| 4 |" in md and "gram: linear1, linear2, self_attn, self_attn.out_proj; materialize: -" in md
    again = tmp_path / "redrawn"
    assert panel.main(["--from-json", str(first / "panel.json"), "--out", str(again)]) == 0
    assert (again / "panel.md").read_text() == md
    assert json.loads((again / "panel.json").read_text()) == json.loads((first / "panel.json").read_text())
    assert (again / "seq_length_panel.png").stat().st_size > 10_000


def test_crossover_is_where_ghost_over_materialise_crosses_one():
    def rec(fw, t, m, ms):
        return {"framework": fw, "T": t, "method": m, "status": "ok", "median_ms": ms}

    data = {"records": [rec("torch", 32, "dp_sgd", 100.0), rec("torch", 32, "dp_ghost", 50.0),
                        rec("torch", 128, "dp_sgd", 100.0), rec("torch", 128, "dp_ghost", 200.0),
                        rec("jax", 32, "dp_sgd", 10.0), rec("jax", 32, "dp_ghost", 5.0)]}
    c = panel.crossovers(data)
    (x,) = c["torch"]["crossings"]
    assert x["between"] == [32, 128] and x["at"] == pytest.approx(64.0) and "below" in x["direction"]
    assert c["jax"]["crossings"] == [] and c["jax"]["ratios"] == {"32": 0.5}


# ---- the command line: a point in its own process ----------------------------------------------------------------

def test_cli_measures_each_point_in_its_own_process(tmp_path: Path):
    """The tiny variant at T = 4, torch, B = 2, through the worker process and the harness's environment (glibc
    malloc non-releasing, recorded in meta)."""
    out = tmp_path / "cli"
    arch = ",".join(f"{k}={v}" for k, v in TINY.items())
    assert panel.main(["--seq-lens", "4", "--batch-size", "2", "--frameworks", "torch", "--min-seconds", "0",
                       "--warmup", "0", "--arch", arch, "--out", str(out)]) == 0
    data = json.loads((out / "panel.json").read_text())
    assert [(r["method"], r["status"]) for r in data["records"]] == \
        [(m, "ok") for m in panel.METHODS + panel.FORCED]  # the CLI's default adds the forced-route bk steps
    forced = {r["method"]: r for r in data["records"] if r["forced_route"]}
    assert set(forced) == {"dp_bk@gram", "dp_bk@materialize"}
    assert set(forced["dp_bk@gram"]["norm_routes"].values()) >= {"gram"}
    assert all(r["model"] == "transformer_T4_custom" and r["T"] == 4 for r in data["records"])
    (point,) = data["points"]
    assert point["process_failure"] is None and point["threads"]["torch_intra_op"] >= 1
    assert point["startup"]["import_s"] > 0 and point["num_params"] == sum(
        v.size for v in panel.canonical_weights(4, TINY).values())
    assert data["meta"]["env"]["MALLOC_MMAP_MAX_"] == "0" and data["meta"]["config"]["arch"] == TINY
    assert len(linear_on_positions(point["layers"])) == 4  # in-projection, out_proj, linear1, linear2
    assert (out / "panel.md").is_file() and (out / "seq_length_panel.pdf").is_file()


def test_a_killed_point_is_recorded_not_lost(tmp_path: Path):
    """A point process that runs out of time: every method recorded with status timeout and why."""
    data = panel.run_panel([4], 2, ["torch"], arch=TINY, min_seconds=0.0, warmup=0, timeout=0.5, argv=[])
    assert [(r["method"], r["status"]) for r in data["records"]] == [(m, "timeout") for m in panel.METHODS]
    assert all("0.5 s" in r["reason"] and r["median_ms"] is None for r in data["records"])
    assert data["points"][0]["process_failure"][0] == "timeout"
    assert "| 4 | - (timeout) |" in panel.markdown(data)


def test_cli_rejects_fewer_than_three_calls(tmp_path: Path):
    with pytest.raises(SystemExit):
        panel.main(["--repeats", "2", "--out", str(tmp_path)])


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("route", ["gram", "materialize"])
def test_forced_route_forces_every_linear_layer_on_positions_and_is_undone(fw: str, route: str):
    """``dp_bk@gram`` / ``dp_bk@materialize`` time the bk step with every linear-kind layer on T positions forced to
    one norm form: inside the context the rules answer that form for a layer the model would route the other way
    (T = 512 materialises, T = 4 takes Gram), and the model's answer is back afterwards."""
    linear = impl_module(fw, "rules.linear")
    with panel._forced_route(fw, route):
        for t in (4, 512):
            assert linear.weight_norm_sq(*_zeros(fw, t), True) is not None if route == "gram" else \
                linear.weight_norm_sq(*_zeros(fw, t), True) is None
    assert cost_model.norm_route("linear", 512, 256, 256) == "materialize"  # the context is undone
    assert linear.weight_norm_sq(*_zeros(fw, 512), True) is None and linear.weight_norm_sq(*_zeros(fw, 4), True) is not None
    with pytest.raises(ValueError, match="unknown forced route"):
        with panel._forced_route(fw, "sometimes"):
            pass


def _zeros(fw: str, t: int):
    """(a, g) of a 256 -> 256 linear layer on t positions, one example."""
    if fw == "torch":
        import torch
        return torch.zeros(1, t, 256), torch.zeros(1, t, 256)
    import jax.numpy as jnp
    return jnp.zeros((1, t, 256)), jnp.zeros((1, t, 256))
