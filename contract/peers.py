"""The peers: other libraries' per-sample gradients and DP-SGD steps, timed beside ours; one entry per peer.

An entry names the peer's method (as ``--methods`` and every record spell it), its framework, what it is (a
``dp`` step or a ``per_sample`` method), the step factory a side builds it with (``<fw>_impl.<module>.<factory>``,
resolved by that side's ``make_peer_step``), the settings it runs with (recorded with every benchmark point; the
names in ``kwargs`` are passed to the factory, so what is recorded is what ran), its library and label for
tables and legends, its figure marker, and the distribution whose version every results meta records.

Read by the benchmark (``compare.benchmark.targets``: the dp kind's methods, steps and recorded settings), the
suite tables and figures, the environment report (``compare.lock``: the versions recorded) and
the results document (``compare.report.tables``). The markers of our own methods are here too, so that no two methods share a marker
(``tests/test_peers.py``). Adding a peer: docs/CONTRIBUTING.md, "Add a peer". Standard library only.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Literal, Mapping, Union

FRAMEWORKS: tuple[str, ...] = ("torch", "jax")
Marker = Union[str, tuple[int, int, int]]  # a matplotlib marker: a code or (sides, style, angle)

# Our own methods' markers, one shape per method in every figure; a peer's marker must differ from all of them.
METHOD_MARKERS: dict[str, Marker] = {
    "batched": "s", "loop": "o", "vmap": "^", "compile": "v", "compile_cudagraphs": "1", "vmap_nojit": "x",
    "per_layer": "<", "vmap_patches": ">", "sgd": "D", "dp_sgd": "h", "dp_ghost": "P", "dp_bk": "*",
    "dist_per_sample": "3", "dist_dp_bk": (6, 1, 0),
}


@dataclass(frozen=True)
class Peer:
    """One peer method. ``factory``: the name of its step factory in ``<framework>_impl.<module>`` (or the factory
    itself, for a peer defined outside the sides), called as ``factory(lr=, clip=, noise_multiplier=, loss=,
    model=, **{k: settings[k] for k in kwargs}) -> step(params, x, y, noise) -> (new params, mean loss)``;
    per-sample peers have none (the side's ``METHODS`` lists them). ``materializes``: the step holds B
    per-example gradients. ``clip_eps``: the eps of its clip factor min(1, C / (||g|| + eps))."""

    name: str
    framework: str
    kind: Literal["dp", "per_sample"]
    library: str  # as tables name the library: "Opacus"
    label: str  # this method in legends: "Opacus ghost"
    marker: Marker
    package: str  # the distribution whose version every results meta records
    module: str = ""
    factory: str | Callable[..., Callable] = ""
    settings: Mapping[str, object] = field(default_factory=dict)
    kwargs: tuple[str, ...] = ()
    materializes: bool = False
    clip_eps: float = 0.0


_PEERS: dict[str, Peer] = {}


def _marker_key(marker: Marker) -> object:
    return marker.lower() if isinstance(marker, str) else marker  # "d" and "D", "h" and "H" look alike


def register(entry: Peer) -> Peer:
    """Add ``entry`` to the registry; one clear error (before anything changes) for a clash or a bad field."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", entry.name):
        raise ValueError(f"peer name {entry.name!r}: lower-case letters, digits and _ only")
    if entry.name in _PEERS or entry.name in METHOD_MARKERS:
        raise ValueError(f"peer name {entry.name!r} is already a method or a registered peer")
    if entry.framework not in FRAMEWORKS:
        raise ValueError(f"peer {entry.name!r}: framework {entry.framework!r} is not one of {FRAMEWORKS}")
    if entry.kind not in ("dp", "per_sample"):
        raise ValueError(f"peer {entry.name!r}: kind {entry.kind!r} is not 'dp' or 'per_sample'")
    if entry.kind == "dp" and not (callable(entry.factory) or (entry.module and entry.factory)):
        raise ValueError(f"peer {entry.name!r}: a dp peer needs a module and factory name, or a factory")
    if set(entry.kwargs) - set(entry.settings):
        raise ValueError(f"peer {entry.name!r}: kwargs {sorted(set(entry.kwargs) - set(entry.settings))} are not "
                         "among its settings")
    taken = {_marker_key(m): name for name, m in markers().items()}
    if _marker_key(entry.marker) in taken:
        raise ValueError(f"peer {entry.name!r}: marker {entry.marker!r} is {taken[_marker_key(entry.marker)]}'s")
    _PEERS[entry.name] = entry
    return entry


def unregister(name: str) -> None:
    """Remove a peer (tests that register one of their own)."""
    _PEERS.pop(name, None)


def peers(framework: str | None = None, kind: str | None = None) -> tuple[Peer, ...]:
    """The registered peers in registration order, optionally of one framework and kind."""
    return tuple(p for p in _PEERS.values()
                 if (framework is None or p.framework == framework) and (kind is None or p.kind == kind))


def peer(name: str) -> Peer:
    if name not in _PEERS:
        raise ValueError(f"unknown peer {name!r}; registered: {tuple(_PEERS)}")
    return _PEERS[name]


def names(framework: str | None = None, kind: str | None = None) -> tuple[str, ...]:
    return tuple(p.name for p in peers(framework, kind))


def packages() -> tuple[str, ...]:
    """The peers' distributions, each once, in registration order (the versions every results meta records)."""
    return tuple(dict.fromkeys(p.package for p in _PEERS.values()))


def library(framework: str, kind: str = "dp") -> str:
    """How a table heads the column of ``framework``'s peers of ``kind``: their libraries joined by " / "."""
    return " / ".join(dict.fromkeys(p.library for p in peers(framework, kind)))


def markers() -> dict[str, Marker]:
    """Every method's marker: our own and each peer's."""
    return {**METHOD_MARKERS, **{p.name: p.marker for p in _PEERS.values()}}


# Opacus 1.6 (torch): its GradSampleModule modes as per-sample methods (torch_impl.opacus_methods) and its two
# DP-SGD paths as steps (torch_impl.opacus_step). Opacus clips with min(1, C / (||g|| + 1e-6)) on both paths
# (DPOptimizer.clip_and_accumulate, GradSampleModuleFastGradientClipping.get_clipping_coef).
for _name, _label, _marker in (("opacus_hooks", "Opacus hooks", "+"), ("opacus_ew", "Opacus ExpandedWeights", "|"),
                               ("opacus_functorch", "Opacus functorch", (6, 2, 0))):
    register(Peer(_name, "torch", "per_sample", "Opacus", _label, _marker, "opacus"))
register(Peer("opacus_sgd", "torch", "dp", "Opacus", "Opacus", "4", "opacus", "opacus_step", "make_opacus_hooks_step",
              settings={"module": "GradSampleModule", "grad_sample_mode": "hooks", "force_functorch": False,
                        "strict": True, "optimizer": "DPOptimizer", "loss_reduction": "mean"},
              materializes=True, clip_eps=1e-6))
register(Peer("opacus_ghost", "torch", "dp", "Opacus", "Opacus ghost", (4, 1, 0), "opacus", "opacus_step",
              "make_opacus_ghost_step", settings={"module": "GradSampleModuleFastGradientClipping",
                                                  "use_ghost_clipping": True, "loss_reduction": "mean"},
              clip_eps=1e-6))
# jax-privacy 2.x (jax): jax_privacy.clipped_grad at its fastest documented settings, measured in
# jax_impl/jax_privacy_step.py's docstring; it clips with min(1, C / ||g||), as we do.
register(Peer("jax_privacy", "jax", "dp", "jax-privacy", "jax-privacy", "2", "jax-privacy", "jax_privacy_step",
              "make_jax_privacy_step", settings={"nan_safe": False, "microbatch_size": None, "keep_batch_dim": True},
              kwargs=("nan_safe", "microbatch_size", "keep_batch_dim"), materializes=True))
