"""compare.benchmark.figures: every figure from a small results file alone, and from a pytest-benchmark JSON."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from compare import style
from compare.benchmark.figures import load_results, main, make_figures
from compare.benchmark.targets import DP_METHODS
from compare.spec import NUM_PARAMS, PARAM_NAMES
from contract.peers import markers

FIGURES = ("time_per_batch", "overhead", "peak_memory", "agreement", "dp_overhead")
KINDS = {"batched": "reference", "sgd": "dp", "dp_sgd": "dp"}  # any other method: per_sample


def _timing(fw: str, method: str, b: int, ms: float, status: str = "ok") -> dict:
    ok = status == "ok"
    return {"framework": fw, "method": method, "kind": KINDS.get(method, "per_sample"),
            "batch_size": b, "dtype": "float32", "device": "cpu", "median_ms": ms if ok else None,
            "iqr_ms": 0.1 if ok else None, "min_ms": ms if ok else None, "repeats": 3 if ok else None,
            "compile_ms": 1.0 if ok else None, "first_call_ms": 2.0 if ok else None,
            "peak_mem_bytes": int(b * NUM_PARAMS * 4 * 1.5) if ok else None, "status": status,
            "reason": "" if ok else "RESOURCE_EXHAUSTED"}


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    timings = [_timing(fw, m, b, scale * b * k) for fw, scale in (("torch", 1.0), ("jax", 2.0))
               for m, k in (("batched", 0.5), ("loop", 3.0), ("vmap", 1.5), ("sgd", 0.6), ("dp_sgd", 2.0))
               for b in (8, 16, 32)]
    timings.append(_timing("jax", "vmap", 64, 0.0, status="oom"))
    rows = [{"param": p, "max_rel_err": 1e-7 * (i + 1), "max_abs_err": 1e-9, "ref_max_abs": 1.0, "bad_samples": []}
            for i, p in enumerate(PARAM_NAMES)]
    agreement = {"ok": True, "tolerance": {"float32": 1e-4, "float64": 1e-10},
                 "results": {f"{fw}/{dt}": rows for fw in ("torch", "jax") for dt in ("float32", "float64")}}
    meta = {"device": "Test CPU", "versions": {"torch": "2.x", "jax": "0.x", "flax": "0.y"}}
    floor = {"bytes_per_s": 1.6e10}
    (tmp_path / "results.json").write_text(json.dumps({"meta": meta, "agreement": agreement, "floor": floor,
                                                       "timings": timings}))
    return tmp_path


def test_every_figure_is_drawn_from_results_json_alone(results_dir):
    written = make_figures(results_dir)
    expected = {results_dir / "figures" / f"{n}.{ext}" for n in FIGURES for ext in ("pdf", "png")}
    tables = {results_dir / "figures" / n for n in ("suite_table.tex", "per_sample_table.tex")}
    assert set(written) == expected | tables
    for path in expected:
        assert path.stat().st_size > 1000, path
    png = (results_dir / "figures" / "time_per_batch.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_writes_into_dir_figures_and_rejects_other_json(results_dir, tmp_path):
    assert main([str(results_dir)]) == 0 and (results_dir / "figures" / "agreement.pdf").is_file()
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"foo": 1}))
    assert main([str(other)]) == 2
    with pytest.raises(ValueError, match="neither"):
        load_results(other)


def test_pytest_benchmark_json_is_accepted(tmp_path):
    def bench(fw: str, method: str, b: int, s: float) -> dict:
        return {"group": f"B={b}", "stats": {"median": s, "iqr": 0.0, "min": s, "rounds": 5},
                "extra_info": {"framework": fw, "kind": "reference" if method == "batched" else "per_sample",
                               "method": method, "batch_size": b, "dtype": "float32", "device": "cpu"}}
    data = {"machine_info": {"cpu": {"brand_raw": "Test CPU"}},
            "benchmarks": [bench(fw, m, b, 0.001 * b) for fw in ("torch", "jax") for m in ("batched", "vmap")
                           for b in (8, 16)]}
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(data))
    loaded = load_results(path)
    assert loaded.timings[0]["median_ms"] == pytest.approx(8.0) and loaded.timings[0]["repeats"] == 5
    written = make_figures(path)
    # no memory and no agreement in a pytest-benchmark file: only the two timing figures
    assert {p.stem for p in written if p.suffix in (".pdf", ".png")} == {"time_per_batch", "overhead"}


def test_markers_are_fixed_per_method_and_distinct():
    m = style.marker_map({"loop", "vmap", "batched", "per_layer", "opacus_hooks", "vmap_patches", "unregistered"})
    assert m["loop"] == "o" and m["vmap"] == "^" and m["batched"] == "s"
    assert m["unregistered"] in style.SPARE_MARKERS
    assert len(set(m.values())) == len(m)


@pytest.mark.parametrize("kind", ["grad", "dp"])
def test_no_two_methods_of_one_figure_have_lookalike_markers(kind):
    """The methods a figure draws together (gradient methods; DP steps and peers) keep shapes apart at 3 pt."""
    from contract.peers import peers

    dp = {"sgd", *DP_METHODS, *(p.name for p in peers(kind="dp"))}
    names = dp if kind == "dp" else set(markers()) - dp
    keys = [style.lookalike_key(m) for name, m in markers().items() if name in names]
    assert len(keys) == len(set(keys)), {n: markers()[n] for n in names}


def test_dp_steps_get_their_own_figure_and_stay_out_of_the_gradient_figures(results_dir, monkeypatch):
    """Figures 1-3 draw no DP step; dp_overhead draws both steps, then dp_sgd / sgd per framework and batch."""
    calls: list[dict] = []
    real = style.draw_lines

    def spy(ax, series, marks):
        calls.append({(s.framework, s.method): (s.x, s.y) for s in series})
        return real(ax, series, marks)

    monkeypatch.setattr(style, "draw_lines", spy)
    make_figures(results_dir)
    # time_per_batch (one panel per framework), overhead, peak_memory, then the two dp_overhead panels
    assert len(calls) == 6
    assert [{fw for fw, _ in c} for c in calls[:2]] == [{"torch"}, {"jax"}]
    for series in calls[:4]:
        assert series and not {m for _, m in series} & {"sgd", "dp_sgd"}
    assert set(calls[4]) == {(fw, m) for fw in ("torch", "jax") for m in ("sgd", "dp_sgd")}
    assert set(calls[5]) == {("torch", "dp_sgd"), ("jax", "dp_sgd")}
    for sizes, ratios in calls[5].values():  # the fixture's steps: dp_sgd 2.0 x B, sgd 0.6 x B (x 2 for jax)
        assert list(sizes) == [8, 16, 32] and ratios == pytest.approx([2.0 / 0.6] * 3, rel=1e-12)


def test_no_dp_figure_without_both_steps(results_dir):
    data = json.loads((results_dir / "results.json").read_text())
    data["timings"] = [r for r in data["timings"] if r["method"] != "sgd"]
    (results_dir / "results.json").write_text(json.dumps(data))
    assert "dp_overhead" not in {p.stem for p in make_figures(results_dir)}


def test_a_single_batch_size_is_drawn_as_bars_with_the_paired_interval(results_dir, monkeypatch):
    """One batch size: bars, no line plot; a paired ratio's 95% interval becomes the bar's error bar."""
    data = json.loads((results_dir / "results.json").read_text())
    data["timings"] = [r for r in data["timings"] if r["batch_size"] == 16]
    for r in data["timings"]:
        if r["method"] == "dp_sgd":
            r["ratios"] = {"sgd": {"median": 3.0, "ci95": [2.5, 3.5], "rounds": 9}}
    (results_dir / "results.json").write_text(json.dumps(data))
    lines, bars = [], []
    monkeypatch.setattr(style, "draw_lines", lambda *a, **k: lines.append(a))
    real = style.draw_bars
    monkeypatch.setattr(style, "draw_bars", lambda ax, series, *a: bars.append(series) or real(ax, series, *a))
    make_figures(results_dir)
    assert not lines and bars
    ratio = [s for b in bars for s in b if s.method == "dp_sgd" and s.lo is not None]
    assert {(s.framework, float(s.y[0]), float(s.lo[0]), float(s.hi[0])) for s in ratio} == \
        {("torch", 3.0, 2.5, 3.5), ("jax", 3.0, 2.5, 3.5)}


def test_paired_intervals_become_error_bars_of_a_sweep(results_dir):
    from compare.benchmark.plots import paired_or_medians, to_series

    timings = json.loads((results_dir / "results.json").read_text())["timings"]
    for r in timings:
        if r["method"] == "vmap" and r["framework"] == "torch" and r["status"] == "ok":
            r["ratios"] = {"batched": {"median": 2.0, "ci95": [1.5, 2.5], "rounds": 9}}
    key = lambda r: (r["framework"], r["batch_size"], r["dtype"])  # noqa: E731
    out = {(s.framework, s.method): s for s in to_series(timings, paired_or_medians(timings, "batched", key))}
    paired, unpaired = out[("torch", "vmap")], out[("jax", "vmap")]
    assert list(paired.y) == [2.0] * 3 and list(paired.lo) == [1.5] * 3 and list(paired.hi) == [2.5] * 3
    assert unpaired.lo is None and list(unpaired.y) == pytest.approx([1.5 / 0.5] * 3)


def test_memory_is_in_mb_and_every_figure_has_title_and_footer(results_dir, monkeypatch):
    texts: list[str] = []
    real = style.finish

    def spy(fig, meta, details=(), legend=None, ncol=4):
        real(fig, meta, details, legend, ncol)
        texts.append((fig._suptitle.get_text(), fig.texts[-1].get_text(),
                      [ax.get_ylabel() for ax in fig.axes]))

    monkeypatch.setattr(style, "finish", spy)
    make_figures(results_dir)
    assert len(texts) == len(FIGURES)
    for title, footer, _ in texts:
        assert title.startswith("seed_cnn: ")
        assert "Test CPU" in footer and "torch 2.x" in footer and "commit" in footer
    assert any(label == "peak memory above baseline (MB)" for *_, labels in texts for label in labels)


def test_footer_names_versions_cpu_and_commit():
    text = style.footer_text({"device": "Xeon", "versions": {"torch": "2.15.0", "jax": "0.12.0"},
                              "git_commit": "0123456789abcdef-dirty", "date": "2026-12-01T15:56:32+00:00"},
                             "float32")
    assert text == "float32; Xeon; torch 2.15.0, jax 0.12.0; commit 0123456-dirty, 2026-12-01"
    assert "commit not recorded" in style.footer_text({})
