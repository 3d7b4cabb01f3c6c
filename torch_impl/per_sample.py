"""Per-sample gradients in PyTorch, by method name.

Methods (``METHODS``):
  loop     the seed's reference: one forward/backward per example with ``torch.autograd.grad``;
  vmap     ``torch.func``: ``vmap(grad(loss))`` over ``functional_call`` (the tutorial's method);
  compile  ``torch.compile`` of the vmap function (compiles on first call, per batch shape);
  compile_cudagraphs  the same with ``mode="reduce-overhead"``: Inductor's kernels replayed as one CUDA graph,
           which removes the per-kernel launch cost that dominates small batches on a GPU (cuda only:
           ``CUDA_METHODS``; on a CPU it would be ``compile`` again);
  per_layer  explicit per-layer rules from one batched forward/backward (``torch_impl.per_layer``);
  opacus_hooks, opacus_ew, opacus_functorch  Opacus' GradSampleModule modes, when opacus is installed
           (``torch_impl.opacus_methods``).
``native_fn`` returns the framework-native callable ``(params, x, y) -> {name: (B, *shape)}`` that the
benchmarks time; ``per_sample_grads`` is the canonical numpy-in/numpy-out API shared with ``jax_impl``.
Every function takes ``model=`` (a ``contract.spec.MODELS`` name, default "seed_cnn", or a ``model.Net``);
``applicable_methods(model)`` says which methods apply to a workload and why not; ``not_run_by_default(model)``
which of those default method lists leave out for their cost.
"""
from __future__ import annotations

import importlib.util
from functools import lru_cache, partial
from typing import Callable

import numpy as np
import torch
from torch.func import functional_call, grad, vmap

from contract.spec import (
    DEFAULT_LOSS,
    DEFAULT_MODEL,
    InputError,
    MethodError,
    check_batch,
    check_chunk_size,
    check_dtype,
    check_loss,
    check_method,
    check_output_fits,
    storage_dtype,
)
from torch_impl import rules
from torch_impl.model import Net, loss_fn, resolve
from torch_impl.opacus_methods import OPACUS_METHODS, opacus_fn
from torch_impl.opacus_methods import not_applicable as opacus_not_applicable
from torch_impl import precision
from torch_impl.per_layer import param_layers, per_layer_grads
from torch_impl.weights import TORCH_DTYPES, resolve_device, to_canonical, to_native

# Opacus is an optional extra (``pip install -e ".[opacus]"``); its methods exist only where it is installed.
HAS_OPACUS = importlib.util.find_spec("opacus") is not None
METHODS: tuple[str, ...] = ("loop", "vmap", "compile", "per_layer") + (OPACUS_METHODS if HAS_OPACUS else ())
# Methods that only mean something on a CUDA device: planned by compare.run on cuda only.
CUDA_METHODS: tuple[str, ...] = ("compile_cudagraphs",)
# Methods this installation lacks -> why: compare.run records them as skipped with the reason.
MISSING: dict[str, str] = {} if HAS_OPACUS else {m: "opacus is not installed" for m in OPACUS_METHODS}

Params = dict[str, torch.Tensor]
GradFn = Callable[[Params, torch.Tensor, torch.Tensor], Params]


def applicable_methods(model: str | Net = DEFAULT_MODEL) -> dict[str, str | None]:
    """{method: None if it applies to this workload here, else the reason it does not} over METHODS,
    CUDA_METHODS and MISSING. Every torch method applies to every registered workload; the installation, the
    device (compare.run plans ``CUDA_METHODS`` on cuda only) and, for opacus_ew on a network with a layer
    ExpandedWeights has no rule for, the model limit them."""
    resolve(model)  # an unknown model name fails here
    out: dict[str, str | None] = {m: opacus_not_applicable(m, model) for m in METHODS}
    out.update({m: "cuda only (CUDA_METHODS)" for m in CUDA_METHODS})
    out.update(MISSING)
    return out


def not_run_by_default(model: str | Net = DEFAULT_MODEL) -> dict[str, str]:
    """{method: why} of the methods that apply to the workload but that default method lists leave out for their
    cost (named explicitly, they run). ``compile`` on a network with a recurrent layer (kind "lstm"): dynamo
    unrolls the recurrence's Python loop over its T positions; measured 775 s to compile the float64 agreement
    check of the lstm workload (T = 256) on a 2-core CPU, 13 min of every ``compare.run --model lstm``."""
    net = resolve(model)
    if not any(rules.kind_of(layer) == "lstm" for layer in param_layers(net.module).values()):
        return {}
    steps = net.spec.input_shape[0]
    return {"compile": f"not run by default: torch.compile unrolls the {steps}-step recurrence (775 s to compile "
                       "at 256 steps on a 2-core CPU); its float64 agreement is tested at T = 6 in "
                       "tests/test_lstm.py; name it in methods= to run it"}


def batch_loss(
    params: Params, x: torch.Tensor, y: torch.Tensor, loss: str, model: str | Net = DEFAULT_MODEL
) -> torch.Tensor:
    # Parameters live in the dicts passed to functional_call; the template module holds none of its own.
    return loss_fn(functional_call(resolve(model).module, params, (x,)), y, loss)


def sample_loss(
    params: Params, x: torch.Tensor, y: torch.Tensor, loss: str, model: str | Net = DEFAULT_MODEL
) -> torch.Tensor:
    """Loss of ONE example (x: one example's input, y: ()) as a batch of one, exactly as the seed does."""
    return batch_loss(params, x.unsqueeze(0), y.unsqueeze(0), loss, model)


def _loop(params: Params, x: torch.Tensor, y: torch.Tensor, loss: str, model: str | Net = DEFAULT_MODEL) -> Params:
    names = list(params)
    leaves = [params[n].detach().requires_grad_(True) for n in names]
    live = dict(zip(names, leaves))
    grads = [torch.autograd.grad(sample_loss(live, x[i], y[i], loss, model), leaves) for i in range(x.shape[0])]
    return {n: torch.stack([g[j] for g in grads]) for j, n in enumerate(names)}


def _vmap(loss: str, chunk_size: int | None, model: str | Net = DEFAULT_MODEL) -> GradFn:
    return vmap(grad(partial(sample_loss, loss=loss, model=model)), in_dims=(None, 0, 0), chunk_size=chunk_size)


def _compiled(loss: str, chunk_size: int | None, mode: str | None = None, model: str | Net = DEFAULT_MODEL) -> GradFn:
    """``torch.compile(vmap(grad))``; ``mode="reduce-overhead"`` adds CUDA graphs (``compile_cudagraphs``).

    With CUDA graphs the outputs live in the graph's static memory pool: a call's result is valid until the
    next call (each call marks a new step; torch raises if an overwritten output is read, it never returns
    stale values silently). Every caller here consumes the result before calling again (the benchmark drops
    it, ``per_sample_grads`` copies it to the host, the DP step reduces it), so no clone is paid; a clone
    would add one more write of B x |params| values to every call.
    """
    compiled = torch.compile(_vmap(loss, chunk_size, model), mode=mode)
    name = "compile" if mode is None else "compile_cudagraphs"

    def call(params: Params, x: torch.Tensor, y: torch.Tensor) -> Params:
        try:
            if mode is not None:
                torch.compiler.cudagraph_mark_step_begin()  # a new iteration: earlier outputs may be overwritten
            return compiled(params, x, y)
        except torch.OutOfMemoryError:
            raise  # out of memory is not a platform failure: callers map it to MemoryError / status "oom"
        except Exception as err:  # Dynamo/Inductor failures surface here, on the first call of a shape
            raise MethodError(f"torch method {name!r} failed on this platform: {type(err).__name__}: {err}") from err

    return call


@lru_cache(maxsize=None)  # one jit/compile per (method, loss, chunk, model, dtype): no recompiling per call
def native_fn(
    method: str = "vmap", *, loss: str = DEFAULT_LOSS, chunk_size: int | None = None,
    model: str | Net = DEFAULT_MODEL, dtype: str = "float32",
) -> GradFn:
    """The framework-native per-sample gradient function: ``(params, x, y) -> {name: (B, *shape)}``.

    ``dtype``: the compute precision; "bfloat16" runs ``_method_fn`` under autocast (``torch_impl.precision``)
    on float32 params and x and returns float32 gradients. float32 / float64 compute in the inputs' dtype."""
    check_dtype(dtype)
    return precision.policy(_method_fn(method, loss, chunk_size, model), dtype)


def _method_fn(method: str, loss: str, chunk_size: int | None, model: str | Net) -> GradFn:
    check_loss(loss)
    check_chunk_size(chunk_size)
    model = resolve(model)  # the Net itself from here: no registry lookup inside traced code (torch.compile)
    check_method(method, METHODS + CUDA_METHODS, chunk_size)
    reason = opacus_not_applicable(method, model)
    if reason is not None:
        raise InputError(f"torch method {method!r} on model {model.spec.name!r}: {reason}")
    if method == "loop":
        return partial(_loop, loss=loss, model=model)
    if method == "vmap":
        return _vmap(loss, chunk_size, model)
    if method == "per_layer":
        return partial(per_layer_grads, loss=loss, chunk_size=chunk_size, model=model)
    if method in OPACUS_METHODS:
        return opacus_fn(method, loss=loss, chunk_size=chunk_size, model=model)
    if method == "compile_cudagraphs":
        return _compiled(loss, chunk_size, mode="reduce-overhead", model=model)
    return _compiled(loss, chunk_size, model=model)


def reference_fn(*, loss: str = DEFAULT_LOSS, model: str | Net = DEFAULT_MODEL, dtype: str = "float32") -> GradFn:
    """Ordinary training's gradient: one batched forward+backward of the mean loss (no per-sample axis), by
    ``torch.autograd.grad`` as the SGD step takes it (``batch_grad_and_value``), the floor's fastest plain form."""
    loss, net = check_loss(loss), resolve(model)
    return precision.policy(lambda params, x, y: batch_grad_and_value(params, x, y, loss=loss, model=net)[0], dtype)


def batch_grad_and_value(params: Params, x: torch.Tensor, y: torch.Tensor, *, loss: str,
                         model: str | Net) -> tuple[Params, torch.Tensor]:
    """(d mean loss / d params, mean loss) by ``torch.autograd.grad``: what ``torch.func.grad_and_value`` returns,
    without its transform's per-op dispatch (an SGD step through ``grad_and_value`` was 1.20-1.57x this one on the
    lstm workload and 2.1-2.4x on ffnn: ``scripts/sgd_formulations.py``, paper/perf-sgd/)."""
    live = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    with torch.enable_grad():
        value = batch_loss(live, x, y, loss, model)
        grads = torch.autograd.grad(value, list(live.values()), allow_unused=True)
    return {k: torch.zeros_like(v) if g is None else g for (k, v), g in zip(live.items(), grads)}, value.detach()


def native_x(x: np.ndarray, dtype: str, dev: torch.device) -> torch.Tensor:
    """A checked numpy input batch -> a device tensor: floats in ``dtype``, token ids as int64."""
    if np.issubdtype(x.dtype, np.integer):
        return torch.as_tensor(x, dtype=torch.int64, device=dev)
    return torch.as_tensor(x, dtype=TORCH_DTYPES[dtype], device=dev)


def native_inputs(
    weights: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, *, dtype: str = "float32", device: str | None = None,
    model: str | Net = DEFAULT_MODEL,
) -> tuple[Params, torch.Tensor, torch.Tensor]:
    """Validate, then move canonical weights and a numpy batch onto ``device`` in ``storage_dtype(dtype)``."""
    check_batch(x, y, resolve(model).spec)
    dev = resolve_device(device)  # on cuda: TF32 off (torch_impl.weights.full_float32)
    held = storage_dtype(dtype)  # bfloat16 computes on float32 masters (torch_impl.precision)
    params = to_native(weights, held, str(dev.type), model=model)
    xt = native_x(x, held, dev)
    yt = torch.as_tensor(y, dtype=torch.int64, device=dev)
    return params, xt, yt


def per_sample_grads(
    weights: dict[str, np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    *,
    method: str = "vmap",
    loss: str = DEFAULT_LOSS,
    dtype: str = "float32",
    chunk_size: int | None = None,
    device: str | None = None,
    model: str | Net = DEFAULT_MODEL,
) -> dict[str, np.ndarray]:
    """Per-sample gradients in canonical names/layouts with a leading batch axis: ``{name: (B, *shape)}``;
    for ``dtype="bfloat16"`` computed in bfloat16 and returned as float32 arrays (numpy has no bfloat16)."""
    check_dtype(dtype)
    fn = native_fn(method, loss=loss, chunk_size=chunk_size, model=model, dtype=dtype)
    params, xt, yt = native_inputs(weights, x, y, dtype=dtype, device=device, model=model)
    check_output_fits(x.shape[0], dtype, resolve(model).spec)
    try:
        grads = fn(params, xt, yt)
    except torch.OutOfMemoryError as err:
        raise MemoryError(
            f"torch method {method!r} ran out of device memory at B={x.shape[0]}; pass chunk_size to bound it"
        ) from err
    return to_canonical(grads, batch_axis=True, model=model)
