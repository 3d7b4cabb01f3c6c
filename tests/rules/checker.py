"""The one checker of the per-kind rule tests (``tests/rules/test_<kind>.py``), in the shape of Opacus'
``tests/grad_samples/common.py``: a layer, its input a and an output cotangent g (float64) go through every
path the engine can take for that layer, and each must equal the vmap fallback (``rules.fallback_per_example``,
the vjp of the layer alone, vmapped over examples):
  per-example gradients   ``rules.per_example``                 == fallback
  squared norms           ``rules.norm_sq`` under the default route and, for a kind with a cost model, under
                          ``forced_routes(<kind>="gram")`` and ``="materialize"``; a None (materialise) is
                          replaced by the norms of ``per_example``, as the engine does      == sum of squares
  clipped sums            ``rules.clipped_sum`` with random weights w where the norm was not None, else
                          sum_b w_b per_example_b, as the engine does                       == sum_b w_b fallback_b
all to ``RTOL`` relative (per leaf, against the reference's largest |value|). The checker also asserts that the
layer is of the kind under test (``rules.kind_of``) and whether its rules cover the instance: covered, the
engine must not call the fallback and a "gram" route must give a number; not covered (the rule's None), the
engine must fall back and the norm must be None. So a test cannot pass by comparing the fallback with itself.
A kind whose engine site differs from the layer's own (input, output cotangent) (the LSTM: recorded at its gate
input projection, input completed by its hidden states, ``rules.site_input``) gets the engine's record of the
layer's site (``per_layer.layer_site``), the fallback the layer's own (a, g).
``test_checker.py`` feeds it deliberately wrong rules and asserts that it fails.
"""
from __future__ import annotations

import importlib
from contextlib import nullcontext
from typing import Any, Callable
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx
from hypothesis import settings
from hypothesis import strategies as st

from contract.cost_model import forced_routes
from jax_impl import rules as jax_rules
from torch_impl import rules as torch_rules

# float64 (u = 1.1e-16): rule and fallback differ only in summation order (measured ~1e-15 on these shapes);
# 1e-10 leaves 1e5x room and is still 1e8x below a wrong factor of 1.01.
RTOL = 1e-10
FRAMEWORKS = ("torch", "jax")
ROUTES = (None, "gram", "materialize")
# Small shapes and few examples (each new shape is one JAX compilation, ~1-2 s on a shared 2-core CPU): the
# whole of tests/rules/ runs in about a minute per framework.
SETTINGS = settings(max_examples=8, deadline=None)
seeds = st.integers(0, 2**16)

Arrays = dict[str, np.ndarray]


def rules_of(framework: str) -> Any:
    """The framework's rules package (``torch_impl.rules`` / ``jax_impl.rules``)."""
    return {"torch": torch_rules, "jax": jax_rules}[framework]


def registered(framework: str, kind: str) -> bool:
    return kind in rules_of(framework).KINDS.values()


def kind_type(framework: str, kind: str) -> type:
    """The one module type registered for ``kind`` (its layer class, wherever that class lives)."""
    types = [t for t, k in rules_of(framework).KINDS.items() if k == kind]
    if len(types) != 1:
        raise LookupError(f"{framework}: {len(types)} module types registered for kind {kind!r}: {types}")
    return types[0]


def _framework(layer: object) -> str:
    return "torch" if isinstance(layer, torch.nn.Module) else "jax"


def abstract(make: Callable[[], nnx.Module]) -> nnx.Module:
    """``make()`` with shape-only parameters (``randomise`` fills them): a flax initializer run eagerly compiles
    at each new shape (~1 s a layer on a shared 2-core CPU), more than the whole check."""
    return nnx.eval_shape(make)


def randomise(layer: Any, rng: np.random.Generator, scale: float = 0.5) -> Any:
    """Every parameter of ``layer`` (in place) to float64 N(0, scale^2) draws: no zero bias or unit scale left
    from an init that could hide a wrong term. Returns the layer."""
    if _framework(layer) == "torch":
        layer.double()
        with torch.no_grad():
            for p in layer.parameters():
                p.copy_(torch.from_numpy(scale * rng.standard_normal(tuple(p.shape))))
        return layer
    state = nnx.state(layer, nnx.Param)
    nnx.update(layer, jax.tree.map(lambda v: jax.device_put(scale * rng.standard_normal(v.shape)), state))
    return layer


def array(framework: str, value: np.ndarray) -> Any:
    return torch.from_numpy(value) if framework == "torch" else jax.device_put(value)


def cotangent(layer: Any, a: Any, rng: np.random.Generator) -> Any:
    """A random float64 output cotangent g shaped like ``layer(a)`` (torch: one plain forward of the layer, as
    the engine's recording forward; JAX: its shape alone, nothing compiled)."""
    if _framework(layer) == "torch":
        with torch.no_grad():
            out = layer(a)
        return torch.from_numpy(rng.standard_normal(tuple(out.shape)))
    return jax.device_put(rng.standard_normal(jax.eval_shape(lambda x: layer(x), a).shape))


def _numpy(v: Any) -> np.ndarray:
    return v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)


def _leaves(tree: dict) -> Arrays:
    return {k: _numpy(v) for k, v in tree.items()}


class _Engine:
    """One framework's engine entry points behind one call shape. torch's take the layer's parameters, as the
    engine passes them (a kind registered ``needs_params``, the LSTM, reads them; the others ignore them)."""

    def __init__(self, layer: Any) -> None:
        self.framework = _framework(layer)
        self.rules = rules_of(self.framework)
        self.layer = layer
        self.params = {k: v.detach() for k, v in layer.named_parameters()} if self.framework == "torch" else None

    def fallback(self, a: Any, g: Any) -> dict:
        if self.framework == "torch":
            return self.rules.fallback_per_example(self.layer, self.params, a, g)
        return self.rules.fallback_per_example(self.layer, a, g)

    def per_example(self, a: Any, g: Any) -> tuple[dict, bool]:
        """(per-example gradients, whether the engine called the fallback for them)."""
        with mock.patch.object(self.rules, "fallback_per_example", wraps=self.rules.fallback_per_example) as spy:
            if self.framework == "torch":
                out = self.rules.per_example(self.layer, self.params, a, g)
            else:
                out = self.rules.per_example(self.layer, a, g)
        return out, spy.called

    def norm_sq(self, a: Any, g: Any) -> Any:
        if self.framework == "torch":
            return self.rules.norm_sq(self.layer, a, g, params=self.params)
        return self.rules.norm_sq(self.layer, a, g)

    def clipped_sum(self, a: Any, g: Any, w: Any) -> dict:
        if self.framework == "torch":
            return self.rules.clipped_sum(self.layer, a, g, w, params=self.params)
        return self.rules.clipped_sum(self.layer, a, g, w)

    def site(self, a: Any, g: Any) -> tuple[Any, Any]:
        """What the engine records at the layer's site for its input a and output cotangent g (``per_layer.
        layer_site``): (a, g) unless the kind completes its input from the layer's output (the LSTM)."""
        if self.rules.site_input(self.layer) is None:
            return a, g
        return importlib.import_module(f"{self.framework}_impl.per_layer").layer_site(self.layer, a, g)

    def paths(self, a: Any, g: Any, w: Any, routes: tuple[str | None, ...], route: str | None
              ) -> tuple[dict, bool]:
        """({"ref": fallback, "grads": per_example, "norms": {r: (B,) or None}, "sums": {r: leaves or None}},
        whether per_example fell back): every path once, the norm and sum under each forced route ``r``. The
        reference sees the layer's own (a, g), the rules the engine's record of its site (``site``)."""
        sa, sg = self.site(a, g)
        grads, fell_back = self.per_example(sa, sg)
        out = {"ref": self.fallback(a, g), "grads": grads, "norms": {}, "sums": {}}
        for r in routes:
            with forced_routes(**{route: r}) if r else nullcontext():
                norm = self.norm_sq(sa, sg)
                out["norms"][r or "default"] = norm
                out["sums"][r or "default"] = None if norm is None else self.clipped_sum(sa, sg, w)
        return out, fell_back

    def run(self, a: Any, g: Any, w: np.ndarray, route: str | None) -> tuple[dict, bool]:
        """``paths`` as numpy; JAX's traced as ONE jitted program (one compilation per case, where running the
        rules op by op compiles each primitive at each new shape: ~30 compilations a case)."""
        routes = ROUTES if route else (None,)
        if self.framework == "torch":
            out, fell_back = self.paths(a, g, torch.from_numpy(w), routes, route)
        else:
            flag: list[bool] = []

            def traced(a: jax.Array, g: jax.Array, w: jax.Array) -> dict:
                out, fell_back = self.paths(a, g, w, routes, route)
                flag.append(fell_back)
                return out

            out, fell_back = jax.jit(traced)(a, g, jax.device_put(w)), flag[0]
        return jax.tree.map(_numpy, out, is_leaf=lambda v: isinstance(v, torch.Tensor)), fell_back


def assert_close(got: Arrays, ref: Arrays, what: str) -> None:
    """Same leaves, shapes and float64 dtype; every leaf within ``RTOL`` of ref relative to its max |value|."""
    assert set(got) == set(ref), f"{what}: leaves {sorted(got)} != reference {sorted(ref)}"
    for leaf, r in ref.items():
        g = got[leaf]
        assert g.shape == r.shape, f"{what}: {leaf} shape {g.shape} != reference {r.shape}"
        assert g.dtype == np.float64, f"{what}: {leaf} is {g.dtype}, not float64"
        err, scale = float(np.abs(g - r).max()), float(np.abs(r).max())
        assert err <= RTOL * scale, (f"{what}: {leaf} max error {err:.2e} against max |reference| {scale:.2e} "
                                     f"(relative tolerance {RTOL:.0e})")


def _sq_sum(grads: Arrays) -> np.ndarray:
    return sum(np.square(v).reshape(v.shape[0], -1).sum(axis=1) for v in grads.values())


def _weighted(grads: Arrays, w: np.ndarray) -> Arrays:
    return {k: np.tensordot(w, v, axes=1) for k, v in grads.items()}


def check_rules(layer: Any, a: Any, g: Any, *, kind: str, route: str | None = None, covered: bool = True,
                seed: int = 0) -> None:
    """Assert every engine path for (layer, a, g) equals the vmap fallback (module docstring).

    layer: a float64 torch ``nn.Module`` or flax ``nnx.Module`` (native layout); a: its input, batch first; g:
    its output cotangent. kind: the kind it must be registered as. route: the ``forced_routes`` key of its cost
    model ("linear", "conv", "lstm"; None: the kind has none). covered: whether its rules cover this instance."""
    engine = _Engine(layer)
    where = f"{engine.framework} {kind} {type(layer).__name__}"
    assert engine.rules.kind_of(layer) == kind, f"{where}: kind_of says {engine.rules.kind_of(layer)!r}"
    w = np.random.default_rng(seed).uniform(-1.0, 2.0, a.shape[0])
    out, fell_back = engine.run(a, g, w, route)
    ref, grads = out["ref"], out["grads"]
    assert ref, f"{where}: the layer has no parameters to check"
    assert fell_back != covered, (f"{where}: the engine {'called' if fell_back else 'did not call'} the fallback "
                                  f"for an instance its rules {'cover' if covered else 'do not cover'}")
    assert_close(grads, ref, f"{where}: per-example gradients")
    ref_norm, ref_sum = {"norm": _sq_sum(ref)}, _weighted(ref, w)
    for label, norm in out["norms"].items():
        if not covered:
            assert norm is None, f"{where}: the norm rule gave a number for an instance it does not cover"
        if covered and label == "gram":
            assert norm is not None, f"{where}: the gram route gave None (materialise)"
        # None: the engine materialises the layer, its norms and sum from the per-example gradients
        got_norm = _sq_sum(grads) if norm is None else norm
        sums = _weighted(grads, w) if norm is None else out["sums"][label]
        assert_close({"norm": got_norm}, ref_norm, f"{where}: squared norms, route {label}")
        assert_close(sums, ref_sum, f"{where}: clipped sum, route {label}")


def check_case(layer: Any, a: np.ndarray, rng: np.random.Generator, **kwargs: Any) -> None:
    """``check_rules`` on ``layer`` (parameters randomised) at input ``a`` (numpy, converted to the layer's
    framework) with a random cotangent."""
    framework = _framework(layer)
    randomise(layer, rng)
    x = array(framework, a)
    check_rules(layer, x, cotangent(layer, x, rng), seed=int(rng.integers(2**31)), **kwargs)
