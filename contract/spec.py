"""Workloads (parameter names and shapes, inputs), losses, input checks and their errors.

Canonical layout = PyTorch ``state_dict`` names and layouts (conv OIHW, linear (out, in), embedding (V, d)).
Pure numpy so that either side (and the harness) can import it without the other framework.
``MODELS`` is the workload registry; the module-level constants (``INPUT_SHAPE``, ``PARAM_SHAPES``, ...) describe
the default workload, ``seed_cnn``, and are for seed-only code (the numpy oracle, the decision replay).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import numpy as np


class InputError(ValueError):
    """A batch, label, dtype or option that the per-sample functions cannot accept."""


class DeviceError(InputError):
    """A device asked for that this machine or framework build cannot provide (``device="cuda"`` without a GPU)."""


@dataclass(frozen=True, eq=False)
class Workload:
    """One network's framework-neutral contract.

    input_shape: one example's shape (images C, H, W: NCHW batches; features (d,); tokens (T,)).
    vocab_size: set for token inputs (int64 ids in [0, vocab_size)); None for float inputs.
    param_shapes: canonical {state_dict name: shape}, in state_dict order.
    Compared by identity (eq=False): a test may build its own, in no registry.
    """

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    param_shapes: dict[str, tuple[int, ...]]
    vocab_size: int | None = None
    description: str = ""
    param_names: tuple[str, ...] = field(init=False)
    num_params: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "param_names", tuple(self.param_shapes))
        object.__setattr__(self, "num_params", sum(int(np.prod(s)) for s in self.param_shapes.values()))

    @property
    def tokens(self) -> bool:
        return self.vocab_size is not None

    @property
    def has_conv(self) -> bool:
        """Any 4-d (OIHW) weight: the workload has 2-d convolutions (``vmap_patches`` applies)."""
        return any(len(s) == 4 for s in self.param_shapes.values())


def _conv(name: str, c_in: int, c_out: int, k: int) -> dict[str, tuple[int, ...]]:
    return {f"{name}.weight": (c_out, c_in, k, k), f"{name}.bias": (c_out,)}


def _linear(name: str, d_in: int, d_out: int) -> dict[str, tuple[int, ...]]:
    return {f"{name}.weight": (d_out, d_in), f"{name}.bias": (d_out,)}


def _encoder(name: str, d: int, ff: int, layers: int) -> dict[str, tuple[int, ...]]:
    """``nn.TransformerEncoder(nn.TransformerEncoderLayer(d, heads, ff, norm_first=True), layers,
    norm=nn.LayerNorm(d))``'s state_dict (attention packed as in ``nn.MultiheadAttention``)."""
    out: dict[str, tuple[int, ...]] = {}
    for i in range(layers):
        p = f"{name}.layers.{i}"
        out.update({f"{p}.self_attn.in_proj_weight": (3 * d, d), f"{p}.self_attn.in_proj_bias": (3 * d,),
                    **_linear(f"{p}.self_attn.out_proj", d, d), **_linear(f"{p}.linear1", d, ff),
                    **_linear(f"{p}.linear2", ff, d), f"{p}.norm1.weight": (d,), f"{p}.norm1.bias": (d,),
                    f"{p}.norm2.weight": (d,), f"{p}.norm2.bias": (d,)})
    return {**out, f"{name}.norm.weight": (d,), f"{name}.norm.bias": (d,)}


def _group_norm(name: str, c: int) -> dict[str, tuple[int, ...]]:
    return {f"{name}.weight": (c,), f"{name}.bias": (c,)}


def _wrn(stem: int, stages: tuple[tuple[int, int], ...], blocks: int, classes: int) -> dict[str, tuple[int, ...]]:
    """A pre-activation wide ResNet with GroupNorm (``torch_impl.models.wrn``'s state_dict): conv0 (no bias), per
    stage ``layerK.i`` blocks of gn1, conv1 3x3, gn2, conv2 3x3 (no biases) and a 1x1 ``shortcut`` conv where the
    shape changes; head gn, fc."""
    out: dict[str, tuple[int, ...]] = {"conv0.weight": (stem, 3, 3, 3)}
    c_in = stem
    for k, (width, stride) in enumerate(stages, 1):
        for i in range(blocks):
            p, c, s = f"layer{k}.{i}", c_in if i == 0 else width, stride if i == 0 else 1
            out.update({**_group_norm(f"{p}.gn1", c), f"{p}.conv1.weight": (width, c, 3, 3),
                        **_group_norm(f"{p}.gn2", width), f"{p}.conv2.weight": (width, width, 3, 3)})
            if c != width or s != 1:
                out[f"{p}.shortcut.weight"] = (width, c, 1, 1)
        c_in = width
    return {**out, **_group_norm("gn", c_in), **_linear("fc", c_in, classes)}


_CIFAR_CHANNELS = ((3, 32), (32, 32), (32, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 10))

MODELS: dict[str, Workload] = {w.name: w for w in (
    Workload("seed_cnn", (1, 28, 28), 10,
             {**_conv("conv1", 1, 32, 3), **_conv("conv2", 32, 64, 3), **_linear("fc1", 9216, 128),
              **_linear("fc2", 128, 10)},
             description="the seed tutorial's CNN (1,199,882 params)"),
    Workload("logreg", (104,), 2, _linear("fc", 104, 2), description="Linear(104, 2) (210 params)"),
    Workload("ffnn", (104,), 2, {**_linear("fc1", 104, 50), **_linear("fc2", 50, 2)},
             description="Linear(104, 50), ReLU, Linear(50, 2) (5,352 params)"),
    Workload("mnist_cnn", (1, 28, 28), 10,
             {**_conv("conv1", 1, 16, 8), **_conv("conv2", 16, 32, 4), **_linear("fc1", 512, 32),
              **_linear("fc2", 32, 10)},
             description="TF-Privacy's MNIST CNN (26,010 params)"),
    Workload("cifar10_cnn", (3, 32, 32), 10,
             {k: v for i, (ci, co) in enumerate(_CIFAR_CHANNELS, 1) for k, v in _conv(f"conv{i}", ci, co, 3).items()},
             description="fast-dpsgd's CIFAR-10 CNN, all 3x3 convs (605,226 params)"),
    Workload("embed", (256,), 2, {"embedding.weight": (10004, 16), **_linear("fc", 16, 2)}, vocab_size=10004,
             description="Embedding(10004, 16), mean over 256 positions, Linear(16, 2) (160,098 params)"),
    Workload("lstm", (256,), 2,
             {"embedding.weight": (10004, 100), "lstm.weight_ih_l0": (400, 100), "lstm.weight_hh_l0": (400, 100),
              "lstm.bias_ih_l0": (400,), "lstm.bias_hh_l0": (400,), **_linear("fc", 100, 2)}, vocab_size=10004,
             description="fast-dpsgd's IMDb LSTM: Embedding(10004, 100), LSTM(100, 100) (nn.LSTM's parameters, "
                         "two biases), mean of the 256 hidden states, Linear(100, 2) (1,081,402 params)"),
    Workload("transformer", (128,), 2, {"embedding.weight": (10004, 256), "pos_embedding.weight": (128, 256),
                                        **_encoder("encoder", 256, 1024, 2), **_linear("fc", 256, 2)},
             vocab_size=10004,
             description="Embedding(10004, 256) + learned positions (128, 256), 2 pre-LayerNorm encoder blocks (4 "
                         "heads, MLP 1024, GELU tanh), LayerNorm, mean over positions, Linear(256, 2) "
                         "(4,174,338 params)"),
    Workload("wrn16_4", (3, 32, 32), 10, _wrn(16, ((64, 1), (128, 2), (256, 2)), 2, 10),
             description="WRN-16-4 with GroupNorm (16 groups), De et al. 2022's DP CIFAR-10 network "
                         "(2,748,890 params)"),
)}
DEFAULT_MODEL = "seed_cnn"


def check_model(model: str | Workload) -> Workload:
    """A registered workload name (or a ``Workload`` built elsewhere, e.g. in a test) -> its ``Workload``."""
    if isinstance(model, Workload):
        return model
    if model not in MODELS:
        raise InputError(f"unknown model {model!r}; expected one of {tuple(MODELS)}")
    return MODELS[model]


def constructor_sizes(network: type) -> dict[str, int]:
    """{keyword: default} of the sizes a network class is built with (its constructor's keywords with a default,
    a framework's ``rngs`` aside): what a variant of a registered workload may change (the sides' ``variant``)."""
    params = inspect.signature(network.__init__).parameters.values()
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty and p.name != "rngs"}


def check_sizes(model: str, sizes: dict[str, int], known: dict[str, int]) -> dict[str, int]:
    """``sizes`` if every key is one of ``known`` (the network's ``constructor_sizes``), else one InputError."""
    unknown = set(sizes) - set(known)
    if unknown:
        raise InputError(f"model {model!r} has no size(s) {sorted(unknown)}; its sizes: {sorted(known)}")
    return sizes


def parse_models(text: str) -> tuple[str, ...]:
    """``--model`` syntax: ``NAME[,NAME...]`` or ``all``; every name checked (one InputError for the first bad one)."""
    names = tuple(MODELS) if text.strip() == "all" else tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise InputError(f"--model needs at least one name; expected NAME[,NAME...] or 'all' from {tuple(MODELS)}")
    for name in names:
        check_model(name)
    return names


_SEED = MODELS[DEFAULT_MODEL]
INPUT_SHAPE: tuple[int, ...] = _SEED.input_shape  # C, H, W of one example (NCHW batches)
NUM_CLASSES = _SEED.num_classes
PARAM_SHAPES: dict[str, tuple[int, ...]] = _SEED.param_shapes
PARAM_NAMES: tuple[str, ...] = _SEED.param_names
NUM_PARAMS = _SEED.num_params  # 1,199,882

# "nll_log_softmax": nll of log_softmax (= cross-entropy), what the tutorial meant.
# "seed": nll_loss on raw logits (-logit[y]); the seed discards log_softmax (`output = x`).
LOSSES: tuple[str, ...] = ("nll_log_softmax", "seed")
DEFAULT_LOSS = "nll_log_softmax"
DTYPES: tuple[str, ...] = ("float32", "float64", "bfloat16")
# Mixed precision (docs/precision.md): "bfloat16" keeps float32 master parameters, inputs and returned arrays
# (numpy has no bfloat16) and computes in bfloat16 (torch autocast, a JAX cast policy); norms, clip factors and
# clipped sums stay float32.
MIXED: dict[str, str] = {"bfloat16": "float32"}


def check_loss(loss: str) -> str:
    if loss not in LOSSES:
        raise InputError(f"unknown loss {loss!r}; expected one of {LOSSES}")
    return loss


def check_dtype(dtype: str) -> str:
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; expected one of {DTYPES}")
    return dtype


def storage_dtype(dtype: str) -> str:
    """The dtype parameters, inputs and returned arrays are held in: "float32" for "bfloat16", else ``dtype``."""
    return MIXED.get(check_dtype(dtype), dtype)


def is_mixed(dtype: str) -> bool:
    """Whether ``dtype`` computes below its storage precision (float32 masters, bfloat16 compute)."""
    return check_dtype(dtype) in MIXED


def check_chunk_size(chunk_size: int | None) -> int | None:
    integer = isinstance(chunk_size, (int, np.integer)) and not isinstance(chunk_size, (bool, np.bool_))
    if chunk_size is not None and (not integer or chunk_size < 1):
        raise InputError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
    return chunk_size


def label_range_error(y: np.ndarray, num_classes: int = NUM_CLASSES) -> str | None:
    """``"0..9 at indices [...] (values [...])"`` for labels outside the classes, else None."""
    bad = np.flatnonzero((y < 0) | (y >= num_classes))
    if not bad.size:
        return None
    return f"0..{num_classes - 1} at indices {bad[:10].tolist()} (values {y[bad[:10]].tolist()})"


def _shape_text(w: Workload) -> str:
    if w.input_shape == INPUT_SHAPE and len(w.input_shape) == 3:
        return "(B, 1, 28, 28) (NCHW)"
    dims = ", ".join(str(d) for d in w.input_shape)
    return f"(B, {dims})" + (" (NCHW)" if len(w.input_shape) == 3 else "")


def _check_x(x: np.ndarray, w: Workload) -> None:
    if x.ndim != 1 + len(w.input_shape) or x.shape[1:] != w.input_shape:
        raise InputError(f"x must have shape {_shape_text(w)} for model {w.name!r}, got {x.shape}"
                         if w.name != DEFAULT_MODEL else f"x must have shape {_shape_text(w)}, got {x.shape}")
    if x.shape[0] < 1:
        raise InputError("x is an empty batch (B=0)")
    if w.tokens:
        if not np.issubdtype(x.dtype, np.integer):
            raise InputError(f"x must be integer token ids for model {w.name!r}, got dtype {x.dtype}")
        bad = np.flatnonzero(((x < 0) | (x >= w.vocab_size)).any(axis=1))
        if bad.size:
            vals = x[bad[0]][(x[bad[0]] < 0) | (x[bad[0]] >= w.vocab_size)][:5].tolist()
            raise InputError(f"token ids out of range 0..{w.vocab_size - 1} in samples {bad[:10].tolist()} "
                             f"(sample {bad[0]}: {vals})")
        return
    if x.dtype not in (np.float32, np.float64):
        raise InputError(f"x must be float32 or float64, got dtype {x.dtype}")
    nonfinite = ~np.isfinite(x).reshape(x.shape[0], -1).all(axis=1)
    if nonfinite.any():
        raise InputError(f"x contains NaN or inf in samples {np.flatnonzero(nonfinite)[:10].tolist()}")


def check_batch(x: np.ndarray, y: np.ndarray, model: str | Workload = DEFAULT_MODEL) -> None:
    """Reject what would otherwise fail late or silently (JAX clamps out-of-range label and token indices)."""
    w = check_model(model)
    if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
        raise InputError(f"x and y must be numpy arrays, got {type(x).__name__} and {type(y).__name__}")
    _check_x(x, w)
    if y.shape != (x.shape[0],):
        raise InputError(f"y must have shape ({x.shape[0]},) to match x, got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise InputError(f"y must be an integer array of class labels, got dtype {y.dtype}")
    bad_labels = label_range_error(y, w.num_classes)
    if bad_labels:
        raise InputError(f"labels out of range {bad_labels}")


def make_batch(
    batch_size: int, seed: int = 0, dtype: str = "float32", model: str | Workload = DEFAULT_MODEL
) -> tuple[np.ndarray, np.ndarray]:
    """A seeded synthetic batch, as in the seed tutorial: standard normal inputs (token workloads: uniform int64
    ids below the vocabulary; ``dtype`` applies to float inputs only), uniform labels."""
    w = check_model(model)
    rng = np.random.default_rng(seed)
    if w.tokens:
        x = rng.integers(0, w.vocab_size, size=(batch_size, *w.input_shape)).astype(np.int64)
    else:
        x = rng.standard_normal((batch_size, *w.input_shape)).astype(dtype)
    y = rng.integers(0, w.num_classes, size=batch_size).astype(np.int64)
    return x, y


class MethodError(RuntimeError):
    """A per-sample method that cannot run here (e.g. torch.compile failing on this platform)."""


def check_method(method: str, methods: tuple[str, ...], chunk_size: int | None) -> str:
    if method not in methods:
        raise InputError(f"unknown method {method!r}; expected one of {methods}")
    if chunk_size is not None and method == "loop":
        raise InputError("chunk_size applies to the vectorised methods, not to 'loop'")
    return method


def available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux); None where it cannot be read."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_output_fits(batch_size: int, dtype: str, model: str | Workload = DEFAULT_MODEL) -> None:
    """The returned per-sample gradients alone need B x (the workload's parameters) values in host memory;
    refuse early."""
    need = batch_size * check_model(model).num_params * np.dtype(storage_dtype(dtype)).itemsize
    avail = available_memory_bytes()
    if avail is not None and need > avail:
        raise MemoryError(
            f"per-sample gradients for B={batch_size} in {dtype} need {need / 2**30:.1f} GiB of host memory "
            f"for the output alone, but only {avail / 2**30:.1f} GiB is available; use a smaller batch"
        )
