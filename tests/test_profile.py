"""compare.benchmark.profile runs on both frameworks and prints the stages the results document cites (B=2, one repeat)."""
from __future__ import annotations

import pytest

from compare.frameworks import FRAMEWORKS
from compare.benchmark.profile import SEED_SUBSETS, main


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_reference_profile_prints_every_stage(framework: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--framework", framework, "--method", "reference", "--batch-size", "2", "--repeats", "1",
                 "--top", "3"]) == 0
    out = capsys.readouterr().out
    for stage in ("forward only", *SEED_SUBSETS):
        line = next(line for line in out.splitlines() if line.strip().startswith(stage))
        wall, cpu = (float(v) for v in line.split()[-2:])
        assert wall > 0 and cpu >= 0


def test_unknown_method_is_rejected() -> None:
    with pytest.raises(SystemExit):
        main(["--framework", "jax", "--method", "nope"])


# ---------------------------------------------------------------- --model


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_profile_non_seed_workloads_name_their_model(framework: str, tmp_path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from compare.benchmark.profile import subsets

    out = tmp_path / "profile.json"
    assert main(["--framework", framework, "--method", "reference", "--model", "ffnn,embed", "--batch-size", "2",
                 "--repeats", "1", "--top", "3", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"# model=ffnn {framework} reference" in text and f"# model=embed {framework} reference" in text
    written = json.loads(out.read_text())
    assert written["meta"]["command"].startswith("python -m compare.profile --framework") and written["meta"]["versions"]
    records = written["records"]
    for model in ("ffnn", "embed"):
        stages = [r["stage"] for r in records if r["model"] == model]
        assert stages == ["forward only", *subsets(model)]
    assert list(subsets("embed")) == ["grad w.r.t. embedding only", "grad w.r.t. fc only",
                                      "grad w.r.t. all (the batched reference)"]
    assert all(r["framework"] == framework and r["wall_ms"] > 0 for r in records)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_per_layer_stages_come_from_the_workload(framework: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--framework", framework, "--method", "per_layer", "--model", "embed", "--batch-size", "2",
                 "--repeats", "1", "--top", "3"]) == 0
    lines = [line.strip() for line in capsys.readouterr().out.splitlines()]
    for stage in ("forward", "forward+backward to outputs", "rule embedding", "rule fc"):
        assert any(line.startswith(stage + " ") for line in lines), stage


def test_method_not_applicable_to_a_workload() -> None:
    # jax's vmap_patches needs a convolution: for ffnn alone that is a usage error, in a selection it is reported
    with pytest.raises(SystemExit) as exc:
        main(["--framework", "jax", "--method", "vmap_patches", "--model", "ffnn"])
    assert exc.value.code == 2
    from compare.benchmark.profile import not_applicable

    assert not_applicable("jax", "vmap_patches", "ffnn") and not_applicable("jax", "vmap_patches", "mnist_cnn") is None
    assert not_applicable("torch", "reference", "embed") is None


def test_bad_model_is_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--framework", "torch", "--model", "nope"])
    assert exc.value.code == 2 and "unknown model" in capsys.readouterr().err


# ---------------------------------------------------------------- --dtype bfloat16


def _flat(tree: object) -> "np.ndarray":
    """Every float value of a (nested) torch or JAX result, as one float64 vector."""
    import jax
    import numpy as np

    values = []
    for v in jax.tree.leaves(tree, is_leaf=lambda v: hasattr(v, "dtype")):
        a = v.detach().double().cpu().numpy() if hasattr(v, "detach") else np.asarray(v, np.float64)
        if a.dtype.kind == "f":
            values.append(a.ravel())
    return np.concatenate(values)


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("section", ("per_layer", "reference"))
def test_bfloat16_stages_compute_in_bfloat16(framework: str, section: str) -> None:
    # the stages profile the mixed-precision computation: their results differ from float32's by bfloat16
    # rounding (u = 2^-8), not float32's (2^-24)
    import numpy as np

    from compare.benchmark.profile import subsets
    from compare.frameworks import side
    from compare.spec import make_batch
    from compare.weights import init_weights

    s = side(framework)
    x, y = make_batch(4, model="ffnn")
    params, xn, yn = s.native_inputs(init_weights(0, "ffnn"), x, y, dtype="bfloat16", model="ffnn")
    results = {}
    for dtype in ("float32", "bfloat16"):
        if section == "per_layer":
            stages, sync = s.per_layer_stages(params, xn, yn, "nll_log_softmax", "ffnn", dtype=dtype)
            results[dtype] = _flat(sync(stages["forward+backward to outputs"]()))
        else:
            stages, sync = s.reference_stages(params, xn, yn, "nll_log_softmax", "ffnn", subsets("ffnn"),
                                              dtype=dtype)
            results[dtype] = _flat(sync(stages["grad w.r.t. all (the batched reference)"]()))
    diff = np.abs(results["bfloat16"] - results["float32"]).max() / np.abs(results["float32"]).max()
    assert 2.0 ** -12 < diff < 0.5, diff


def test_unknown_dtype_is_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--framework", "torch", "--dtype", "float16"])
    assert exc.value.code == 2 and "--dtype" in capsys.readouterr().err
