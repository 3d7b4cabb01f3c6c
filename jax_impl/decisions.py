"""The non-smooth decisions of JAX's forward, for any workload: ReLU gates and max-pool winners, in canonical
NCHW numpy; and the float64 gradient of the smooth piece that given decisions pick (the replay).

A per-sample gradient is the gradient of one smooth piece of a piecewise-smooth function; the piece is
chosen by these decisions. Comparing them between float32 and float64 explains gradients that jump
(``compare.agreement.explain``). Sites are found from the model itself, nothing here names a layer: every JAX
model calls ``relu`` / ``max_pool`` of ``jax_impl.models.common``, which this module hooks (at trace time, in
its own forwards only), and every parameterised module of the merged model is wrapped (as in
``jax_impl.per_layer``) to say which layer's output a ReLU gates. Keys, shapes and layouts:
``contract.sites``. Mirrored by ``torch_impl.decisions`` (same functions, same keys).
"""
from __future__ import annotations

from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from contract import sites as S
from contract.spec import DEFAULT_LOSS, DEFAULT_MODEL
from jax_impl import precision, rules
from jax_impl.model import Net, loss_fn, resolve
from jax_impl.models.common import decision_hook
from jax_impl.per_sample import native_inputs
from jax_impl.weights import param_modules, path_name, replace_module, to_canonical

Arrays = dict[str, jax.Array]


def _canonical_shape(a: jax.Array) -> tuple[int, ...]:
    """One sample's canonical shape of a batch-of-one NHWC map (C, H, W), or of a (1, F) vector (F,)."""
    return (a.shape[3], a.shape[1], a.shape[2]) if a.ndim == 4 else tuple(a.shape[1:])


def _nhwc(a: jax.Array) -> jax.Array:
    return jnp.transpose(a, (0, 2, 3, 1)) if a.ndim == 4 else a


class _Hook:
    """Records (or, with ``forced``, imposes) each site's decisions during ONE forward of a batch of one."""

    def __init__(self, forced: Arrays | None = None, scales: bool = False, single_pool: bool = False) -> None:
        self.forced, self.scales, self.single_pool = forced, scales, single_pool
        self.sites: list[S.Site] = []
        self.out: Arrays = {}
        self.last: tuple[str, nnx.Module, jax.Array, jax.Array] | None = None  # (layer, module, input, output)
        self.relu_out: tuple[str, jax.Array] | None = None

    def layer(self, name: str, module: nnx.Module, a: jax.Array, out: jax.Array) -> None:
        self.last = (name, module, a, out)

    def relu(self, z: jax.Array) -> jax.Array:
        layer = self.last[0] if self.last is not None and self.last[3] is z else None
        key = S.relu_key(layer, [s.key for s in self.sites])
        site = S.Site(key, "relu", _canonical_shape(z), layer)
        self.sites.append(site)
        if self.forced is not None:
            out = z * _nhwc(self.forced[key]).astype(z.dtype)
        else:
            out = nnx.relu(z)
            self.out[f"{site.base}.pre"] = z
            if self.scales and layer is not None and rules.kind_of(self.last[1]) in S.SCALED_KINDS:
                _, module, a, _ = self.last
                graphdef, state = nnx.split(module)
                self.out[f"{site.base}.scale"] = nnx.merge(graphdef, jax.tree.map(jnp.abs, state))(jnp.abs(a))
        self.relu_out = (key, out)
        return out

    def max_pool(self, x: jax.Array, window: tuple[int, int], strides: tuple[int, int]) -> jax.Array:
        k, s = tuple(int(v) for v in window), tuple(int(v) for v in strides)
        source = self.relu_out[0] if self.relu_out is not None and self.relu_out[1] is x else None
        key = S.pool_key(sum(t.kind == "max_pool" for t in self.sites), self.single_pool)
        if self.forced is not None:
            out = _gather(x, self.forced[key], k, s)
        else:
            out = nnx.max_pool(x, k, strides=s)
            self.out[key] = x  # the winners are taken from these values (first max: XLA's select uses >=)
        self.sites.append(S.Site(key, "max_pool", _canonical_shape(out), None, source, k, s, _canonical_shape(x)))
        return out


def _gather(x: jax.Array, winners: jax.Array, k: tuple[int, int], s: tuple[int, int]) -> jax.Array:
    """NHWC max-pool with the winners (B, C, Ho, Wo) imposed: out[b, i, j, c] = x[b, i*sh + w // kw, j*sw + w % kw, c]."""
    b, h, w, c = x.shape
    ho, wo = winners.shape[-2:]
    win = winners.astype(jnp.int32)
    rows = jnp.arange(ho).reshape(1, 1, ho, 1) * s[0] + win // k[1]
    cols = jnp.arange(wo).reshape(1, 1, 1, wo) * s[1] + win % k[1]
    planes = jnp.transpose(x, (0, 3, 1, 2)).reshape(b, c, h * w)
    out = jnp.take_along_axis(planes, (rows * w + cols).reshape(b, c, ho * wo), axis=2)
    return jnp.transpose(out.reshape(b, c, ho, wo), (0, 2, 3, 1))


class _Layer(nnx.Module):
    def __init__(self, inner: nnx.Module, name: str, hook: _Hook) -> None:
        self.inner, self.name, self.hook = inner, name, hook

    def __call__(self, x: jax.Array, *args: object, **kwargs: object) -> jax.Array:
        out = self.inner(x, *args, **kwargs)
        self.hook.layer(self.name, self.inner, x, out)
        return out


def _instrumented(net: Net, params: nnx.State, hook: _Hook) -> nnx.Module:
    """The merged model with each parameterised module wrapped so that ``hook`` learns its name, input and output."""
    root = nnx.merge(net.graphdef, params)
    for path, module in sorted(param_modules(root), key=lambda pm: -len(pm[0])):  # deepest first, the root last
        root = replace_module(root, path, _Layer(module, path_name(path), hook))
    return root


def _run(net: Net, params: nnx.State, x: jax.Array, hook: _Hook) -> jax.Array:
    model = _instrumented(net, params, hook)
    with decision_hook(hook):
        return model(x)


@lru_cache(maxsize=None)
def _sites(net: Net) -> tuple[S.Site, ...]:
    hook = _Hook()
    dtype = jnp.int32 if net.spec.tokens else jnp.float32
    jax.eval_shape(lambda p, x: _run(net, p, x, hook), net.abstract_state,
                   jax.ShapeDtypeStruct((1, *net.spec.input_shape), dtype))
    return tuple(S.rename(hook.sites))


def decision_sites(model: str | Net = DEFAULT_MODEL) -> list[S.Site]:
    """The model's ReLU and max-pool sites in forward order (empty for a network without any)."""
    return list(_sites(resolve(model)))


@lru_cache(maxsize=None)
def _forward(net: Net, scales: bool):
    single = S.single_pool(decision_sites(net))

    def sample(params: nnx.State, x: jax.Array) -> Arrays:
        """ONE example, run as a batch of one through the model (as ``vmap`` sees it)."""
        hook = _Hook(scales=scales, single_pool=single)
        _run(net, params, x[None], hook)
        return {k: v[0] for k, v in hook.out.items()}

    return jax.jit(jax.vmap(sample, in_axes=(None, 0)))


def _nchw(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(a, (0, 3, 1, 2))) if a.ndim == 4 else a


def forward_decisions(
    weights: dict[str, np.ndarray], x: np.ndarray, *, dtype: str = "float32", device: str | None = None,
    model: str | Net = DEFAULT_MODEL, scales: bool = False,
) -> dict[str, np.ndarray]:
    """Pre-activations and decisions of the forward in ``dtype`` (``jit(vmap)`` per-sample, like method "vmap";
    "bfloat16": the cast policy, pre-activations returned as float32 arrays of bfloat16 values).

    Per ReLU site (``contract.sites``): ``{layer}.pre`` (B, ...) in ``dtype`` and ``{layer}.relu``
    bool gates (pre > 0: JAX's ReLU passes no gradient at 0); with ``scales``, ``{layer}.scale`` = S.
    Per max-pool site: its key, (B, C, Ho, Wo) int8 window positions max_pool's backward routes to.
    Seed CNN: ``conv1/conv2/fc1.pre|relu`` and ``pool.winner`` (B, 64, 12, 12) in 0..3.
    """
    net = resolve(model)
    sites = decision_sites(net)
    y = np.zeros(x.shape[0], np.int64)  # labels are irrelevant to the forward; native_inputs validates x
    params, xj, _ = native_inputs(weights, x, y, dtype=dtype, device=device, model=net)
    if not sites:
        return {}
    params, xj = precision.to_compute(params, dtype), precision.to_compute(xj, dtype)  # bfloat16: the cast policy
    out = precision.to_float32(jax.block_until_ready(_forward(net, scales)(params, xj)))
    raw = {k: _nchw(np.asarray(v)) for k, v in out.items()}
    decisions: dict[str, np.ndarray] = {}
    for site in sites:
        if site.kind == "relu":
            decisions[f"{site.base}.pre"] = raw[f"{site.base}.pre"]
            decisions[site.key] = raw[f"{site.base}.pre"] > 0
            if f"{site.base}.scale" in raw:
                decisions[f"{site.base}.scale"] = raw[f"{site.base}.scale"]
        else:
            decisions[site.key] = S.argmax_winners(raw[site.key], site)
    return S.check_decisions(sites, decisions, x.shape[0])


def replay_grads(
    weights: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, forced: dict[str, np.ndarray], *,
    loss: str = DEFAULT_LOSS, device: str | None = None, model: str | Net = DEFAULT_MODEL,
) -> dict[str, np.ndarray]:
    """float64 per-sample gradients ``{name: (B, *shape)}`` of the smooth piece that ``forced`` picks: every
    site's decisions (B, *site.shape) imposed (ReLU: z * gate; max-pool: the forced winner), one example at a
    time. With the float64 decisions forced this is the float64 gradient itself."""
    net = resolve(model)
    sites = decision_sites(net)
    S.check_decisions(sites, forced, x.shape[0])
    params, xj, yj = native_inputs(weights, x, y, dtype="float64", device=device, model=net)
    single = S.single_pool(sites)

    def sample_loss(p: nnx.State, xi: jax.Array, yi: jax.Array, f: Arrays) -> jax.Array:
        return loss_fn(_run(net, p, xi, _Hook(forced=f, single_pool=single)), yi, loss)

    grad = jax.grad(sample_loss)
    grads = [grad(params, xj[i:i + 1], yj[i:i + 1], {s.key: jnp.asarray(forced[s.key][i:i + 1]) for s in sites})
             for i in range(x.shape[0])]
    return to_canonical(jax.tree.map(lambda *g: jnp.stack(g), *grads), batch_axis=True, model=net)
