"""The transformer: exact per-sample gradients and DP steps on a SMALL variant built here (the same
model classes as the registered workload, T = 6, width 16, 2 heads, 2 blocks), the canonical layout (the
state_dict of torch's own nn.TransformerEncoder; the packed attention and LayerNorm <-> Flax NNX rules pinned
with weights that tell the orderings apart), the parameter count, and the linear layers' norm routes.

The registered workload itself (T = 128, 4,174,338 parameters) runs every method / strategy / peer at B = 3-4 in
tests/test_workloads.py; here each linear norm route (Gram and materialise) is forced on both sides as well.
"""
from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
import torch.nn as nn

from compare.frameworks import FRAMEWORKS, impl_module
from contract import cost_model
from contract.cost_model import forced_routes
from compare.spec import MODELS, Workload, make_batch
from jax_impl.model import Net as JaxNet
from jax_impl.models import transformer as jax_tf
from torch_impl.model import Net as TorchNet
from torch_impl.models import transformer as torch_tf
from workload_checks import assert_close, check_dp, per_sample

SMALL = {"vocab": 11, "seq_len": 6, "width": 16, "heads": 2, "ff": 24, "num_layers": 2, "classes": 3}


def small_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """Canonical float32 weights of the small variant: torch's init, then every tensor given distinct random
    values (torch inits the attention / LayerNorm biases at 0 and the LayerNorm weights at 1, which would hide a
    mis-mapped bias or scale)."""
    torch.manual_seed(seed)
    module = torch_tf.TransformerNet(**SMALL)
    rng = np.random.default_rng(seed)
    out = {}
    for k, v in module.state_dict().items():
        a = v.numpy().astype(np.float32)
        scale = 0.3 if a.ndim == 1 else 1.0
        base = 1.0 if k.endswith("norm1.weight") or k.endswith("norm2.weight") or k == "encoder.norm.weight" else 0.0
        out[k] = (a + base + scale * rng.standard_normal(a.shape)).astype(np.float32) if a.ndim == 1 else \
            (a + 0.1 * rng.standard_normal(a.shape) * (np.abs(a).max() or 1.0)).astype(np.float32)
    return out


def build() -> tuple[Workload, dict[str, TorchNet | JaxNet], dict[str, np.ndarray]]:
    """(Workload, {framework: Net}, canonical weights): a fresh pair each call (JAX caches traces per Net)."""
    weights = small_weights()
    spec = Workload("transformer_small", (SMALL["seq_len"],), SMALL["classes"],
                    {k: v.shape for k, v in weights.items()}, vocab_size=SMALL["vocab"])
    torch.manual_seed(0)
    nets = {"torch": TorchNet(spec, torch_tf.TransformerNet(**SMALL)),
            "jax": JaxNet.build(spec, lambda rngs: jax_tf.TransformerNet(**SMALL, rngs=rngs))}
    return spec, nets, weights


@pytest.fixture(scope="module")
def small():
    return build()


def batch(spec: Workload, b: int = 3, seed: int = 1):
    x, y = make_batch(b, seed=seed, dtype="float64", model=spec)
    x[:, -1] = x[:, 0]  # every example repeats a token (the embedding's per-(example, id) rows)
    return x, y


# ---- the registered workload's contract ---------------------------------------------------------------------

def test_parameter_count_is_exact():
    """4,174,338 = embedding 10004 x 256 + positions 128 x 256 + 2 x 789,760 (torch's encoder layer) + final
    LayerNorm 512 + Linear(256, 2) 514; the same from both modules."""
    spec = MODELS["transformer"]
    assert spec.num_params == 4_174_338 and spec.input_shape == (128,) and spec.vocab_size == 10004
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(256, 4, 1024, dropout=0.0, batch_first=True, norm_first=True)
    per_block = sum(p.numel() for p in layer.parameters())
    assert per_block == 789_760
    assert 10004 * 256 + 128 * 256 + 2 * per_block + 512 + 514 == spec.num_params
    assert sum(p.numel() for p in torch_tf.TransformerNet().parameters()) == spec.num_params
    from jax_impl.model import resolve

    import jax
    assert sum(v.size for v in jax.tree.leaves(resolve("transformer").abstract_state)) == spec.num_params


def test_canonical_names_are_torch_transformer_encoder_state_dict(small):
    """The registered names = nn.TransformerEncoder(nn.TransformerEncoderLayer(norm_first=True), 2,
    norm=LayerNorm)'s state_dict under "encoder.", in its order; and on the small variant our weights load into
    that torch stack (strict) and give the same logits in float64."""
    torch.manual_seed(0)
    ref = nn.TransformerEncoder(nn.TransformerEncoderLayer(256, 4, 1024, dropout=0.0, batch_first=True,
                                                           norm_first=True), 2, norm=nn.LayerNorm(256),
                                enable_nested_tensor=False)
    names = [k for k in MODELS["transformer"].param_names if k.startswith("encoder.")]
    assert names == [f"encoder.{k}" for k in ref.state_dict()]
    assert {f"encoder.{k}": tuple(v.shape) for k, v in ref.state_dict().items()} == \
        {k: MODELS["transformer"].param_shapes[k] for k in names}

    spec, nets, weights = small
    w = {k: torch.tensor(v, dtype=torch.float64) for k, v in weights.items()}
    encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(
        SMALL["width"], SMALL["heads"], SMALL["ff"], dropout=0.0, activation=nn.GELU(approximate="tanh"),
        batch_first=True, norm_first=True), SMALL["num_layers"], norm=nn.LayerNorm(SMALL["width"]),
        enable_nested_tensor=False).double().train()  # dropout is 0; in eval() torch's fused fast path runs
    # exact GELU despite approximate="tanh" (a 1e-4 difference), so train() keeps the module's own forward
    encoder.load_state_dict({k[len("encoder."):]: v for k, v in w.items() if k.startswith("encoder.")}, strict=True)
    x, _ = batch(spec, 4)
    xt = torch.as_tensor(x)
    with torch.no_grad():
        h = encoder(w["embedding.weight"][xt] + w["pos_embedding.weight"])
        expected = h.mean(1) @ w["fc.weight"].T + w["fc.bias"]
        ours = torch_tf.TransformerNet(**SMALL).double()
        ours.load_state_dict(w, strict=True)
        got = ours(xt)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_packed_attention_layout_pins_qkv_order_and_heads():
    """Canonical in_proj_weight row r (q rows [0, d), k [d, 2d), v [2d, 3d), head h of each = rows h hd ..
    (h + 1) hd) becomes native in_proj_kernel COLUMN r; in_proj_bias keeps its order; LayerNorm weight -> scale.
    Index-valued weights, so any other order shows."""
    from jax_impl.weights import KIND_LAYOUTS, layout, to_canonical, to_native

    assert KIND_LAYOUTS[jax_tf.MultiheadSelfAttention] == {"in_proj_kernel": ("in_proj_weight", (1, 0)),
                                                           "in_proj_bias": ("in_proj_bias", None)}
    spec = MODELS["transformer"]
    w = {k: np.zeros(s, np.float32) for k, s in spec.param_shapes.items()}
    name = "encoder.layers.1.self_attn.in_proj_weight"
    w[name] = np.arange(768, dtype=np.float32)[:, None] * 1000 + np.arange(256, dtype=np.float32)[None, :]
    w[name.replace("weight", "bias")] = np.arange(768, dtype=np.float32)
    w["encoder.layers.0.norm2.weight"] = np.arange(256, dtype=np.float32)
    w["encoder.layers.0.norm2.bias"] = -np.arange(256, dtype=np.float32)
    native = to_native(w, "float32", "cpu", model="transformer")
    attn = native["encoder"]["layers"][1]["self_attn"]
    kernel, bias = np.asarray(attn["in_proj_kernel"][...]), np.asarray(attn["in_proj_bias"][...])
    assert kernel.shape == (256, 768) and np.array_equal(kernel[3, :], np.arange(768) * 1000 + 3)
    assert np.array_equal(bias, np.arange(768))
    norm = native["encoder"]["layers"][0]["norm2"]
    assert np.array_equal(np.asarray(norm["scale"][...]), np.arange(256))
    assert np.array_equal(np.asarray(norm["bias"][...]), -np.arange(256))
    assert layout("transformer")[name] == (("encoder", "layers", 1, "self_attn"), "in_proj_kernel", (1, 0))
    back = to_canonical(native, model="transformer")
    assert all(np.array_equal(back[k], w[k]) for k in w)


@pytest.mark.parametrize("permute", [None, "qkv", "heads"])
def test_jax_attention_equals_torch_multihead_attention(permute):
    """JAX's MultiheadSelfAttention (loaded through the layout rule) = torch's own nn.MultiheadAttention in
    float64 with weights whose q / k / v blocks and heads all differ; permuting the canonical q/k/v blocks or the
    heads (consistently in q, k, v) changes the output, so the check sees both orderings."""
    import jax.numpy as jnp
    from flax import nnx

    d, heads, t = 16, 4, 5
    rng = np.random.default_rng(0)
    w_in, b_in = rng.standard_normal((3 * d, d)), rng.standard_normal(3 * d)
    w_out, b_out = rng.standard_normal((d, d)) / 4, rng.standard_normal(d)
    x = rng.standard_normal((2, t, d))
    ref = nn.MultiheadAttention(d, heads, batch_first=True, dtype=torch.float64)
    ref.load_state_dict({"in_proj_weight": torch.tensor(w_in), "in_proj_bias": torch.tensor(b_in),
                         "out_proj.weight": torch.tensor(w_out), "out_proj.bias": torch.tensor(b_out)})
    xt = torch.tensor(x)
    with torch.no_grad():
        expected = ref(xt, xt, xt, need_weights=False)[0].numpy()
    if permute == "qkv":
        w_in, b_in = np.roll(w_in, d, axis=0), np.roll(b_in, d)
    elif permute == "heads":  # heads 0 and 1 swapped in q, k and v alike
        hd = d // heads
        idx = np.concatenate([blk * d + h * hd + np.arange(hd) for blk in range(3) for h in (1, 0, 2, 3)])
        w_in, b_in = w_in[idx], b_in[idx]
    attn = jax_tf.MultiheadSelfAttention(d, heads, rngs=nnx.Rngs(0))
    attn.in_proj_kernel, attn.in_proj_bias = nnx.Param(jnp.asarray(w_in.T)), nnx.Param(jnp.asarray(b_in))
    attn.out_proj.kernel, attn.out_proj.bias = nnx.Param(jnp.asarray(w_out.T)), nnx.Param(jnp.asarray(b_out))
    got = np.asarray(attn(jnp.asarray(x)))
    if permute is None:
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
        with torch.no_grad():  # and torch's own module of the workload
            ours = torch_tf.MultiheadSelfAttention(d, heads).double()
            ours.load_state_dict(ref.state_dict())
            np.testing.assert_allclose(ours(xt).numpy(), expected, rtol=1e-12, atol=1e-12)
    else:
        assert np.abs(got - expected).max() > 1e-3


# ---- kinds, routes and the cost model -----------------------------------------------------------------------

def test_layers_take_the_intended_kinds(small):
    """Every parameterised module's kind, both sides: the packed in-projection is the attention module's own
    parameter pair applied by its ``Projection`` child (kind "projection": the linear rules on d loss / d qkv),
    out_proj is an ordinary linear on (B, T, d)."""
    _, nets, weights = small
    expected = {"embedding": "embedding", "pos_embedding": "param_add", "encoder.norm": "layernorm", "fc": "linear"}
    for i in range(SMALL["num_layers"]):
        p = f"encoder.layers.{i}"
        expected.update({f"{p}.self_attn": "projection", f"{p}.self_attn.out_proj": "linear", f"{p}.linear1": "linear",
                         f"{p}.linear2": "linear", f"{p}.norm1": "layernorm", f"{p}.norm2": "layernorm"})
    for fw in FRAMEWORKS:
        rules, per_layer = impl_module(fw, "rules"), impl_module(fw, "per_layer")
        if fw == "torch":
            found = per_layer.param_layers(nets["torch"].module)
        else:
            params = impl_module("jax", "weights").to_native(weights, "float64", "cpu", model=nets["jax"])
            found = per_layer.layers(params, nets["jax"])
        assert {n: rules.kind_of(m) for n, m in found.items()} == expected, fw


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_no_layer_takes_the_fallback(small, fw: str, monkeypatch):
    """With the projection kind, every layer of the transformer has a rule: per_layer and the bk step run with
    the vmap fallback made to fail (before the kind, the attention module took it), and still equal the loop."""
    spec, nets, weights = build()
    rules = impl_module(fw, "rules")

    def refuse(*args, **kwargs):
        raise AssertionError("the vmap fallback was called")

    x, y = batch(spec)
    ref = per_sample(fw, weights, x, y, "loop", nets[fw])
    monkeypatch.setattr(rules, "fallback_per_example", refuse)
    assert_close(per_sample(fw, weights, x, y, "per_layer", nets[fw]), ref, f"{fw} per_layer without fallback")


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_a_projection_must_apply_all_its_parents_parameters(fw: str):
    """A parent that owns a parameter its projection child does not apply would get no gradient for it: refused
    with the names, not silently dropped."""
    rules = impl_module(fw, "rules")
    if fw == "torch":
        layer = torch_tf.MultiheadSelfAttention(8, 2)
        layer.extra = nn.Parameter(torch.zeros(3))
    else:
        from flax import nnx
        import jax.numpy as jnp
        layer = jax_tf.MultiheadSelfAttention(8, 2, rngs=nnx.Rngs(0))
        layer.extra = nnx.Param(jnp.zeros(3))
    with pytest.raises(ValueError, match="extra"):
        rules.kind_of(layer)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_registered_linear_norm_routes_follow_the_cost_model(fw: str):
    """gram when T (d + p) < LINEAR_GRAM_SLACK d p (1.6, measured: paper/cpu-seq-costmodel/). At the registered
    T = 128 every linear layer on positions takes the Gram form -- out_proj (256 -> 256, cost ratio exactly 1:
    slack 1 materialised it, measured 1.2-1.7x slower), linear1 / linear2 (256 <-> 1024, 0.625); at T = 512 they
    all materialise (ratio 2.5-4); fc (one position) always takes the rank-one norm. Same choice on both sides."""
    rules = impl_module(fw, "rules")
    linear = importlib.import_module(f"{fw}_impl.rules.linear")
    assert cost_model.LINEAR_GRAM_SLACK == 1.6
    expected = {(128, 256, 256): "gram", (128, 256, 1024): "gram", (128, 1024, 256): "gram",
                (512, 256, 256): "materialize", (512, 256, 1024): "materialize", (512, 1024, 256): "materialize",
                (1, 256, 2): "gram"}
    for (t, d, p), route in expected.items():
        assert rules.gram_is_cheaper(t, d, p, cost_model.LINEAR_GRAM_SLACK) == (route == "gram")
        if fw == "torch":
            layer, a, g = nn.Linear(d, p), torch.zeros(1, t, d), torch.zeros(1, t, p)
        else:
            import jax.numpy as jnp
            from flax import nnx
            layer, a, g = nnx.Linear(d, p, rngs=nnx.Rngs(0)), jnp.zeros((1, t, d)), jnp.zeros((1, t, p))
        assert (linear.linear_norm_sq(layer, a, g) is None) == (route == "materialize"), (t, d, p)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_bookkeeping_routes_follow_its_own_cost_model(fw: str):
    """Inside ``rules.bookkeeping()`` (the bk step's route choice) a linear layer on T positions takes Gram when
    T^2 (d + p) < BK_MATERIALISE_COST d p (25, measured: paper/cpu-seq-panel*): every linear-kind layer of the
    transformer (in-projection 256 -> 768, out_proj, linear1, linear2) takes Gram at T = 32 and materialises at
    T = 128 and 512; outside (dp_ghost) T = 128 stays Gram. The bk step enters that context and leaves it."""
    rules = impl_module(fw, "rules")
    linear = importlib.import_module(f"{fw}_impl.rules.linear")
    assert cost_model.BK_MATERIALISE_COST == 25.0
    shapes = ((256, 768), (256, 256), (256, 1024), (1024, 256))
    for t, route in ((32, "gram"), (128, "materialize"), (512, "materialize")):
        for d, p in shapes:
            if fw == "torch":
                a, g = torch.zeros(1, t, d), torch.zeros(1, t, p)
            else:
                import jax.numpy as jnp
                a, g = jnp.zeros((1, t, d)), jnp.zeros((1, t, p))
            with rules.bookkeeping():
                assert rules.in_bookkeeping()
                assert (linear.weight_norm_sq(a, g, True) is None) == (route == "materialize"), (t, d, p)
            assert not rules.in_bookkeeping()
            if t == 128:
                assert linear.weight_norm_sq(a, g, True) is not None, (d, p)  # dp_ghost's rule: Gram


# ---- exactness: every method, every strategy, torch = JAX --------------------------------------------------

def _methods(fw: str) -> list[str]:
    return [m for m, why in impl_module(fw, "per_sample").applicable_methods("transformer").items()
            if why is None or m in impl_module(fw, "per_sample").METHODS]


SLOW_METHODS = {("torch", "compile"), ("jax", "vmap"), ("jax", "vmap_nojit")}  # > 10 s here (compiling)


@pytest.mark.parametrize(("fw", "method"), [pytest.param(fw, m, marks=pytest.mark.slow) if (fw, m) in SLOW_METHODS
                                            else (fw, m) for fw in FRAMEWORKS for m in _methods(fw) if m != "loop"])
def test_every_method_equals_the_loop(small, fw: str, method: str, request):
    """float64, B = 3, relative 1e-10 (inapplicable methods are refused with their reason)."""
    spec, nets, weights = small
    ps = impl_module(fw, "per_sample")
    x, y = batch(spec)
    reason = ps.applicable_methods(nets[fw]).get(method)
    if reason is not None:
        with pytest.raises(ValueError, match="not applicable"):
            per_sample(fw, weights, x, y, method, nets[fw])
        return
    ref = per_sample(fw, weights, x, y, "loop", nets[fw])
    assert_close(per_sample(fw, weights, x, y, method, nets[fw]), ref, f"{fw} {method}")


def test_torch_equals_jax(small):
    spec, nets, weights = small
    x, y = batch(spec, 4)
    for loss in ("nll_log_softmax", "seed"):
        assert_close(per_sample("jax", weights, x, y, "loop", nets["jax"], loss),
                     per_sample("torch", weights, x, y, "loop", nets["torch"], loss), f"torch vs jax {loss}")


@pytest.mark.parametrize("fw", ["torch", pytest.param("jax", marks=pytest.mark.slow)])  # JAX: ~25 s of jit
@pytest.mark.parametrize("route", [None, "gram", "materialize"])
def test_every_dp_strategy(fw: str, route: str | None, monkeypatch):
    """materialize / ghost / bk = the numpy reference from the loop's per-example gradients (half the examples
    clipped, noise on), with the linear layers' norm route as the cost model chooses (T = 6: Gram everywhere)
    and forced to each route; the peer library (Opacus ghost + hooks, jax-privacy) on the cost model's route."""
    spec, nets, weights = build()  # fresh Nets: JAX's jitted steps are cached per Net
    with forced_routes(linear=route):
        check_dp(fw, weights, nets[fw], ("materialize", "ghost", "bk"), batch=batch(spec, 4, seed=3),
                 peer=route is None)


@pytest.mark.slow  # ~12 s: two jitted / traced bk steps
def test_dp_step_torch_equals_jax(small):
    import math

    from workload_checks import dp_update

    spec, nets, weights = small
    x, y = batch(spec, 4, seed=3)
    steps = {fw: dp_update(fw, weights, x, y, nets[fw], clipping="bk", clip=math.inf, nm=0.0, noise=None)
             for fw in FRAMEWORKS}
    assert_close(steps["jax"], steps["torch"], "bk torch vs jax")


def test_what_opacus_does_with_each_layer():
    """Opacus 1.6 on the workload (no rule of ours involved): its validator accepts the model (it has no
    nn.MultiheadAttention, which it would ask to replace by DPMultiheadAttention: separate q/k/v Linear modules,
    other state_dict names); its hooks and ghost modes walk the same modules -- the attention module, having no
    Opacus grad sampler, is ONE functorch unit (vmap of the vjp of the whole attention, out_proj included, which
    gets no hook of its own), as are the learned positions; in ghost mode the Linear layers (also on (B, T, d):
    always the Gram form, no cost model) and the Embedding take norm samplers, the LayerNorms are materialised by
    their grad sampler ("fast gradient clipping, hook mode")."""
    pytest.importorskip("opacus")
    from opacus.grad_sample import GradSampleModuleFastGradientClipping
    from opacus.validators import ModuleValidator

    from torch_impl.opacus_methods import live_module

    module = live_module("transformer")
    assert ModuleValidator.validate(module, strict=False) == []
    gsm = GradSampleModuleFastGradientClipping(module, batch_first=True, loss_reduction="mean", max_grad_norm=1.0,
                                               use_ghost_clipping=True)
    names = {id(m): n for n, m in module.named_modules()}

    def mode(m: nn.Module) -> str:
        return ("ghost" if type(m) in gsm.NORM_SAMPLERS else "hook" if type(m) in gsm.GRAD_SAMPLERS else "functorch")

    got = {names[id(m)]: mode(m) for m in gsm.iterate_submodules(module)}
    expected = {"embedding": "ghost", "pos_embedding": "functorch", "encoder.norm": "hook", "fc": "ghost"}
    for i in range(2):
        p = f"encoder.layers.{i}"
        expected.update({f"{p}.self_attn": "functorch", f"{p}.linear1": "ghost", f"{p}.linear2": "ghost",
                         f"{p}.norm1": "hook", f"{p}.norm2": "hook"})
    assert got == expected


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_seq_cost_model_reads_the_projection_site(fw: str):
    """scripts/seq_cost_model.py times the in-projection on the engine's own site: a = the attention's input,
    g = d loss / d qkv; shapes at T = 8 (registered widths)."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "seq_cost_model.py"
    spec = importlib.util.spec_from_file_location("seq_cost_model", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("seq_cost_model", module)
    spec.loader.exec_module(module)
    arrays = module.site_arrays(fw, 8, 2)
    a, g = arrays["in_proj"]
    assert a.shape == (2, 8, 256) and g.shape == (2, 8, 768) and np.abs(g).max() > 0
    assert arrays["out_proj"][1].shape == (2, 8, 256)
