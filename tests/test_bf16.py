"""bfloat16 compute (docs/precision.md): float32 outputs, float32 norms, and clipping as a guarantee.

The clipping test scales examples so that their float64 gradient norms sit at C (1 + k u), k in -4, -1, 1, 4
(u = 2^-8), then checks that every example's clipped contribution, as each strategy computes it in bfloat16,
is at most C (1 + delta) with delta = ``contract.precision.clip_bound`` (float32 rounding for materialize and bk,
(2D + 2) u for ghost's second bfloat16 backward). Small batches and workloads by default; the seed CNN is slow.
"""
from __future__ import annotations

import json
from functools import lru_cache

import ml_dtypes
import numpy as np
import pytest

from compare.agreement import clip_guarantee as G
from compare.frameworks import FRAMEWORKS, side
from compare.spec import InputError, MODELS, make_batch
from compare.weights import init_weights
from contract.precision import U_BF16, clip_bound, gradient_bound

CLIPPINGS = ("materialize", "ghost", "bk")


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("method", ["vmap", "per_layer"])
def test_bfloat16_grads_are_float32_and_within_bound(fw: str, method: str) -> None:
    """logreg has no ReLU or max-pool: its bfloat16 per-sample gradients are the smooth piece, within (2D+3) u
    of float64, and bfloat16 rounding is visible (not silently float32)."""
    w, (x, y) = init_weights(0, "logreg"), make_batch(6, 1, model="logreg")
    s = side(fw)
    ref = s.per_sample_grads(w, x.astype(np.float64), y, method="vmap", dtype="float64", model="logreg")
    got = s.per_sample_grads(w, x, y, method=method, dtype="bfloat16", model="logreg")
    f32 = s.per_sample_grads(w, x, y, method=method, dtype="float32", model="logreg")
    for k in ref:
        assert got[k].dtype == np.float32 and got[k].shape == ref[k].shape
        scale = np.abs(ref[k]).max()
        err = np.abs(got[k] - ref[k]).max() / scale
        assert err <= gradient_bound("logreg"), f"{fw}/{method} {k}: {err:.2e} > {gradient_bound('logreg'):.2e}"
        assert np.abs(got[k] - f32[k]).max() / scale > 1e-5, f"{k}: bfloat16 result equals float32's"


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_norm_helper_accumulates_in_float32(fw: str) -> None:
    """rules.sq of a bfloat16 array returns float32 and sums in float32 (a bfloat16 sum of 4096 equal squares
    stalls at 256 x the term: 2^8 terms fill the significand)."""
    if fw == "torch":
        import torch
        from torch_impl.rules import sq
        v = torch.full((2, 4096), 1.0, dtype=torch.bfloat16)
        out = sq(v)
        assert out.dtype == torch.float32 and torch.all(out == 4096.0)
    else:
        import jax.numpy as jnp
        from jax_impl.rules import sq
        out = sq(jnp.full((2, 4096), 1.0, dtype=jnp.bfloat16))
        assert out.dtype == jnp.float32 and bool(jnp.all(out == 4096.0))


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_unknown_dtype_is_one_clear_error(fw: str) -> None:
    w, (x, y) = init_weights(0, "logreg"), make_batch(2, 0, model="logreg")
    with pytest.raises(InputError, match="unknown dtype 'float16'"):
        side(fw).per_sample_grads(w, x, y, dtype="float16", model="logreg")


def _conv_bias_grad(fw: str, x: np.ndarray, c: np.ndarray) -> float:
    """d sum(conv(x) * c) / d bias of a 1x1 one-channel convolution in the framework's bfloat16 policy."""
    if fw == "torch":
        import torch
        import torch.nn.functional as F
        from torch_impl import precision

        w = torch.ones(1, 1, 1, 1, requires_grad=True)
        b = torch.zeros(1, requires_grad=True)
        with precision.compute("bfloat16", "cpu"):
            out = F.conv2d(torch.as_tensor(x).permute(0, 3, 1, 2), w, b)
        (out.float() * torch.as_tensor(c).permute(0, 3, 1, 2)).sum().backward()
        return float(b.grad[0])
    import jax
    import jax.numpy as jnp
    from flax import nnx
    from jax_impl.precision import promote_conv, to_compute

    graphdef, state = nnx.split(nnx.Conv(1, 1, (1, 1), promote_dtype=promote_conv, rngs=nnx.Rngs(0)))

    def loss(state: nnx.State) -> jax.Array:
        out = nnx.merge(graphdef, to_compute(state, "bfloat16"))(to_compute(jnp.asarray(x), "bfloat16"))
        return jnp.sum(out.astype(jnp.float32) * c)

    return float(jax.jit(jax.grad(loss))(state)["bias"][...][0])


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_conv_bias_gradient_is_summed_in_float32(fw: str) -> None:
    """A conv bias's gradient sums the output cotangent over every position (4096 here): both frameworks sum in
    float32 and round once (error <= u |sum| + float32's), not with each partial sum rounded to bfloat16 (XLA:CPU's
    bfloat16 reduce, which JAX's autodiff of a bfloat16 bias add would use: measured 6 u here)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 64, 64, 1)).astype(np.float32)
    c = rng.standard_normal((1, 64, 64, 1)).astype(np.float32)
    c = c.astype(ml_dtypes.bfloat16).astype(np.float32)  # a bfloat16 output's cotangent is a bfloat16 number
    exact = float(c.astype(np.float64).sum())
    got = _conv_bias_grad(fw, x, c)
    tol = U_BF16 * abs(exact) + c.size * 2.0 ** -24 * float(np.abs(c).sum())
    assert abs(got - exact) <= tol, f"{fw}: bias gradient {got} vs {exact}, error {abs(got - exact):.3e} > {tol:.3e}"


def _gate_input_kernel_grad(fw: str, x: np.ndarray) -> np.ndarray:
    """d sum(GateInput(x)) / d kernel of the LSTM's gate input in the framework's bfloat16 policy, canonical
    layout (4H, in)."""
    if fw == "torch":
        import torch
        from torch_impl import precision
        from torch_impl.layers import GateInput

        w = torch.full((4, x.shape[2]), 0.01, requires_grad=True)
        b = torch.zeros(4)
        with precision.compute("bfloat16", "cpu"):
            out = GateInput()(torch.as_tensor(x), w, b, b)
        out.float().sum().backward()
        return w.grad.numpy()
    import jax
    import jax.numpy as jnp
    from jax_impl.layers import GateInput
    from jax_impl.precision import to_compute

    def loss(k: jax.Array) -> jax.Array:
        k, b, xb = to_compute((k, jnp.zeros(4), jnp.asarray(x)), "bfloat16")
        return jnp.sum(GateInput()(xb, k, b, b).astype(jnp.float32))

    return np.asarray(jax.jit(jax.grad(loss))(jnp.full((x.shape[2], 4), 0.01))).T


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_lstm_gate_input_kernel_gradient_is_accumulated_in_float32(fw: str) -> None:
    """The LSTM's input kernel gradient sums x_t dz_t over every position (4096 ones here: exactly 4096, a
    bfloat16 number): both frameworks accumulate in float32 and round once. XLA:CPU computes the transposed
    bfloat16 product that JAX's autodiff emits for it with a bfloat16 result in bfloat16 (it returned 2048
    here); ``jax_impl.layers.GateInput`` asks for a float32 result, as torch's autocast matmul accumulates."""
    got = _gate_input_kernel_grad(fw, np.ones((1, 4096, 3), np.float32))
    assert np.all(got == 4096.0), f"{fw}: kernel gradient {np.unique(got)}, expected 4096"


def test_jax_lstm_bfloat16_methods_agree() -> None:
    """JAX's vmap (autodiff of the model) and per_layer (the LSTM rule on the recorded [x; h_prev] and dz) compute
    the same bfloat16 products accumulated in float32 from the same float32 recurrence, so on a small LSTM with the
    workload's T = 256 they differ only by float32 summation order: at most one bfloat16 rounding (u) of
    max |gradient| per parameter. With the input kernel's gradient accumulated in bfloat16 (above) vmap's was 11 u
    from per_layer's."""
    import torch

    from compare.spec import Workload
    from jax_impl.model import Net as JaxNet
    from jax_impl.models.lstm import LSTMNet as JaxLSTMNet
    from torch_impl.models.lstm import LSTMNet as TorchLSTMNet

    t, vocab, width = 256, 11, 8
    torch.manual_seed(0)
    w = {k: v.detach().numpy() for k, v in TorchLSTMNet(vocab, width, width).state_dict().items()}
    spec = Workload("lstm_bf16", (t,), 2, {k: v.shape for k, v in w.items()}, vocab_size=vocab)
    net = JaxNet.build(spec, lambda rngs: JaxLSTMNet(vocab, width, width, rngs=rngs))
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, vocab, (2, t)), rng.integers(0, 2, 2)
    got = {m: side("jax").per_sample_grads(w, x, y, method=m, dtype="bfloat16", model=net)
           for m in ("vmap", "per_layer")}
    for k, v in got["vmap"].items():
        diff = np.abs(v - got["per_layer"][k]).max() / np.abs(v).max()
        assert diff <= U_BF16, f"{k}: vmap and per_layer differ by {diff / U_BF16:.2f} u"


@lru_cache(maxsize=None)
def _adversarial(fw: str, model: str) -> tuple:
    """One adversarial batch per (framework, workload), shared by the three strategies' tests."""
    w = init_weights(0, model)
    return (w, *G.adversarial_batch(fw, w, 8, model))


def _check_contributions(fw: str, model: str, clipping: str) -> None:
    w, x, y, norms64, clip = _adversarial(fw, model)
    offsets = (norms64 / clip - 1) / U_BF16
    assert (offsets < 0).any() and (offsets > 0).any(), f"the batch does not straddle C: {offsets}"
    got = G.contributions(fw, w, x, y, model, clipping, clip)
    delta = clip_bound(clipping, model, MODELS[model].num_params)
    worst = int(np.argmax(got))
    assert got.max() <= clip * (1 + delta), (f"{fw} {clipping} {model}: example {worst}'s contribution "
                                             f"{got[worst] / clip - 1:.3e} above C, bound {delta:.3e}")


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("clipping", CLIPPINGS)
@pytest.mark.parametrize("model", ["ffnn", "mnist_cnn"])
def test_clipped_contribution_within_bound(fw: str, clipping: str, model: str) -> None:
    _check_contributions(fw, model, clipping)


@pytest.mark.slow
@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("clipping", CLIPPINGS)
def test_clipped_contribution_within_bound_seed_cnn(fw: str, clipping: str) -> None:
    _check_contributions(fw, "seed_cnn", clipping)


def test_precision_command_writes_its_table_for_one_run(tmp_path):
    """The CLI end to end on the smallest workload (the GPU check's stage): JSON and the markdown table."""
    from compare.agreement.precision import main as precision_main

    assert precision_main(["--model", "logreg", "--batch-size", "4", "--clip-batch-size", "4",
                           "--methods", "per_layer", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "precision.md").read_text()
    assert ": logreg (" in text and "| logreg | torch | per_layer |" in text


def test_combine_keeps_every_run_when_a_part_is_already_combined(tmp_path):
    """A combined table grows by one workload: the combined part's runs stay listed, one line per command."""
    from compare.agreement.precision import main as precision_main

    for name, model in (("a", "logreg"), ("b", "ffnn")):
        assert precision_main(["--model", model, "--batch-size", "2", "--clip-batch-size", "4",
                               "--methods", "per_layer", "--out", str(tmp_path / name)]) == 0
    assert precision_main(["--combine", str(tmp_path / "a"), "--out", str(tmp_path / "ab")]) == 0
    assert precision_main(["--combine", str(tmp_path / "ab"), str(tmp_path / "b"), "--out", str(tmp_path / "c")]) == 0
    report = json.loads((tmp_path / "c" / "precision.json").read_text())
    assert [p["models"] for p in report["meta"]["parts"]] == [["logreg"], ["ffnn"]]
    assert {g["model"] for g in report["gradients"]} == {"logreg", "ffnn"}
    text = (tmp_path / "c" / "precision.md").read_text()
    assert ": logreg (" in text and ": ffnn (" in text
    # a re-run of one workload replaces its rows and its run's mention
    assert precision_main(["--model", "logreg", "--batch-size", "3", "--clip-batch-size", "4",
                           "--methods", "per_layer", "--out", str(tmp_path / "a2")]) == 0
    assert precision_main(["--combine", str(tmp_path / "c"), str(tmp_path / "a2"), "--out", str(tmp_path / "d")]) == 0
    report = json.loads((tmp_path / "d" / "precision.json").read_text())
    assert [p["models"] for p in report["meta"]["parts"]] == [["ffnn"], ["logreg"]]
    assert {g["batch_size"] for g in report["gradients"] if g["model"] == "logreg"} == {3}
    assert len([c for c in report["clipping"] if c["model"] == "logreg"]) == len(
        [c for c in report["clipping"] if c["model"] == "ffnn"])
