"""The non-smooth decisions of PyTorch's forward, for any workload: ReLU gates and max-pool winners, in
canonical NCHW numpy; and the float64 gradient of the smooth piece that given decisions pick (the replay).

A per-sample gradient is the gradient of one smooth piece of a piecewise-smooth function; the piece is
chosen by these decisions. Comparing them between float32 and float64 explains gradients that jump
(``compare.agreement.explain``). Sites are found from the model itself, nothing here names a layer: a
``TorchFunctionMode`` sees every ``F.relu`` / ``torch.relu`` / ``F.max_pool2d`` call (``nn.ReLU`` and
``nn.MaxPool2d`` call these too), and forward hooks on the parameterised layers (``torch_impl.per_layer``)
say which layer's output a ReLU gates. Keys, shapes and layouts: ``contract.sites``.
Mirrored by ``jax_impl.decisions`` (same functions, same keys).
"""
from __future__ import annotations

from contextlib import contextmanager
from functools import lru_cache
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap
from torch.overrides import TorchFunctionMode

from contract import sites as S
from contract.spec import DEFAULT_LOSS, DEFAULT_MODEL, is_mixed, make_batch
from torch_impl import precision, rules
from torch_impl.model import Net, loss_fn, resolve
from torch_impl.per_layer import param_layers
from torch_impl.per_sample import native_inputs

Tensors = dict[str, torch.Tensor]
_RELU = (F.relu, torch.relu, torch.Tensor.relu)
_MAX_POOL = (F.max_pool2d,)


def _pair(v: object) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


class _Recorder(TorchFunctionMode):
    """Records (or, with ``forced``, imposes) each site's decisions during ONE forward of a batch of one."""

    def __init__(self, params: Tensors, forced: Tensors | None = None, scales: bool = False,
                 single_pool: bool = False) -> None:
        super().__init__()
        self.params, self.forced, self.scales, self.single_pool = params, forced, scales, single_pool
        self.modules: dict[str, torch.nn.Module] = {}
        self.sites: list[S.Site] = []
        self.out: Tensors = {}
        self.last: tuple[str, torch.Tensor, torch.Tensor] | None = None  # (layer, its input, its output)
        self.relu_out: tuple[str, torch.Tensor] | None = None

    def layer_hook(self, name: str):
        def hook(mod: torch.nn.Module, args: tuple, out: torch.Tensor) -> None:
            self.last = (name, args[0], out)
        return hook

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _RELU:
            return self._relu(args[0])
        if func in _MAX_POOL:
            return self._max_pool(*args, **kwargs)
        return func(*args, **kwargs)

    def _relu(self, z: torch.Tensor) -> torch.Tensor:
        layer = self.last[0] if self.last is not None and self.last[2] is z else None
        key = S.relu_key(layer, [s.key for s in self.sites])
        site = S.Site(key, "relu", tuple(z.shape[1:]), layer)
        self.sites.append(site)
        if self.forced is not None:
            out = z * self.forced[key].to(z.dtype)
        else:
            out = F.relu(z)
            self.out[f"{site.base}.pre"] = z
            if self.scales and layer is not None and rules.kind_of(self.modules[layer]) in S.SCALED_KINDS:
                last, a = self.last, self.last[1]
                own = {k.rsplit(".", 1)[1]: v.abs() for k, v in self.params.items() if k.rsplit(".", 1)[0] == layer}
                self.out[f"{site.base}.scale"] = functional_call(self.modules[layer], own, (a.abs(),))
                self.last = last  # the hook fired again on the |a| call
        self.relu_out = (key, out)
        return out

    def _max_pool(self, x: torch.Tensor, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                  return_indices=False) -> torch.Tensor:
        if _pair(padding) != (0, 0) or _pair(dilation) != (1, 1) or ceil_mode or return_indices:
            raise NotImplementedError("decision sites: max_pool2d with padding, dilation, ceil_mode or "
                                      "return_indices is not supported")
        k = _pair(kernel_size)
        s = _pair(stride) if stride not in (None, ()) else k
        source = self.relu_out[0] if self.relu_out is not None and self.relu_out[1] is x else None
        key = S.pool_key(sum(t.kind == "max_pool" for t in self.sites), self.single_pool)
        if self.forced is not None:
            out = _gather(x, self.forced[key], k, s)
        else:
            out, idx = F.max_pool2d(x, k, s, return_indices=True)  # backward routes through idx
            self.out[key] = idx
        self.sites.append(S.Site(key, "max_pool", tuple(out.shape[1:]), None, source, k, s, tuple(x.shape[1:])))
        return out


def _gather(x: torch.Tensor, winners: torch.Tensor, k: tuple[int, int], s: tuple[int, int]) -> torch.Tensor:
    """Max-pool with the winners imposed: out[b, c, i, j] = x[b, c, i*sh + w // kw, j*sw + w % kw]."""
    b, c, h, w = x.shape
    ho, wo = winners.shape[-2:]
    win = winners.to(torch.int64)
    rows = torch.arange(ho, device=x.device)[:, None] * s[0] + win // k[1]
    cols = torch.arange(wo, device=x.device)[None, :] * s[1] + win % k[1]
    return x.flatten(2).gather(2, (rows * w + cols).flatten(2)).view(b, c, ho, wo)


@contextmanager
def _recording(net: Net, rec: _Recorder) -> Iterator[_Recorder]:
    layers = param_layers(net.module)
    rec.modules = layers
    handles = [m.register_forward_hook(rec.layer_hook(name)) for name, m in layers.items()]
    try:
        with rec:
            yield rec
    finally:
        for h in handles:
            h.remove()


def _sample_forward(params: Tensors, x: torch.Tensor, net: Net, scales: bool) -> Tensors:
    """ONE example, run as a batch of one through the model (as ``vmap`` sees it); returns the recorded arrays."""
    single = S.single_pool(decision_sites(net))
    with _recording(net, _Recorder(params, scales=scales, single_pool=single)) as rec:
        functional_call(net.module, params, (x.unsqueeze(0),))
    return {k: v[0] for k, v in rec.out.items()}


@lru_cache(maxsize=None)
def _sites(net: Net) -> tuple[S.Site, ...]:
    x, _ = make_batch(1, seed=0, model=net.spec)
    params = {k: torch.zeros(v, dtype=torch.float64) for k, v in net.spec.param_shapes.items()}
    xt = torch.as_tensor(x) if np.issubdtype(x.dtype, np.integer) else torch.as_tensor(x, dtype=torch.float64)
    with torch.no_grad(), _recording(net, _Recorder(params)) as rec:
        functional_call(net.module, params, (xt,))
    return tuple(S.rename(rec.sites))


def decision_sites(model: str | Net = DEFAULT_MODEL) -> list[S.Site]:
    """The model's ReLU and max-pool sites in forward order (empty for a network without any)."""
    return list(_sites(resolve(model)))


def _window_index(flat: np.ndarray, site: S.Site) -> np.ndarray:
    """max_pool2d's flat input index (per (b, c) plane) -> position dh * kw + dw inside its window."""
    width = site.in_shape[-1]
    ho, wo = site.shape[1:]
    dh = flat // width - np.arange(ho)[:, None] * site.stride[0]
    dw = flat % width - np.arange(wo)[None, :] * site.stride[1]
    return (dh * site.kernel[1] + dw).astype(np.int8)


def forward_decisions(
    weights: dict[str, np.ndarray], x: np.ndarray, *, dtype: str = "float32", device: str | None = None,
    model: str | Net = DEFAULT_MODEL, scales: bool = False,
) -> dict[str, np.ndarray]:
    """Pre-activations and decisions of the forward in ``dtype`` (vmapped per-sample, like method "vmap";
    "bfloat16": under autocast, pre-activations returned as float32 arrays of bfloat16 values).

    Per ReLU site (``contract.sites``): ``{layer}.pre`` (B, ...) in ``dtype`` and ``{layer}.relu``
    bool gates (pre > 0: torch's ReLU passes no gradient at 0); with ``scales``, ``{layer}.scale`` = S.
    Per max-pool site: its key, (B, C, Ho, Wo) int8 window positions max_pool2d's backward routes to.
    Seed CNN: ``conv1/conv2/fc1.pre|relu`` and ``pool.winner`` (B, 64, 12, 12) in 0..3.
    """
    net = resolve(model)
    sites = decision_sites(net)
    y = np.zeros(x.shape[0], np.int64)  # labels are irrelevant to the forward; native_inputs validates x
    params, xt, _ = native_inputs(weights, x, y, dtype=dtype, device=device, model=net)
    if not sites:
        return {}
    with torch.no_grad(), precision.compute(dtype, xt.device.type):  # bfloat16: autocast, like per_sample's methods
        if is_mixed(dtype):  # autocast does not reach conv2d inside torch.func.vmap (docs/precision.md): loop
            rows = [_sample_forward(params, xt[i], net, scales) for i in range(xt.shape[0])]
            out = {k: torch.stack([r[k] for r in rows]) for k in rows[0]}
        else:
            out = vmap(lambda p, xi: _sample_forward(p, xi, net, scales), in_dims=(None, 0))(params, xt)
    raw = {k: precision.to_float32(v).cpu().numpy() for k, v in out.items()}
    decisions: dict[str, np.ndarray] = {}
    for site in sites:
        if site.kind == "relu":
            decisions[f"{site.base}.pre"] = raw[f"{site.base}.pre"]
            decisions[site.key] = raw[f"{site.base}.pre"] > 0
            if f"{site.base}.scale" in raw:
                decisions[f"{site.base}.scale"] = raw[f"{site.base}.scale"]
        else:
            decisions[site.key] = _window_index(raw[site.key], site)
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
    params, xt, yt = native_inputs(weights, x, y, dtype="float64", device=device, model=net)
    names = list(params)
    leaves = [params[n].requires_grad_(True) for n in names]
    live = dict(zip(names, leaves))
    grads = []
    for i in range(x.shape[0]):
        f = {s.key: torch.as_tensor(np.asarray(forced[s.key][i:i + 1]), device=xt.device) for s in sites}
        with _recording(net, _Recorder(live, forced=f, single_pool=S.single_pool(sites))):
            logits = functional_call(net.module, live, (xt[i:i + 1],))
        grads.append(torch.autograd.grad(loss_fn(logits, yt[i:i + 1], loss), leaves))
    return {n: torch.stack([g[j] for g in grads]).detach().cpu().numpy() for j, n in enumerate(names)}
