"""The JAX / Flax NNX side, mirroring ``torch_impl`` module for module: every registered workload (``models``),
canonical <-> native weights (``weights``), per-sample gradients by method (``per_sample``: ``vmap(grad)``, the
per-layer-kind rules of ``per_layer`` / ``rules``, im2col convolutions), DP-SGD steps (``dp``, ``ghost``,
jax-privacy's ``jax_privacy_step``), data-parallel runs on a device mesh (``distributed``), non-smooth decisions
and their replay (``decisions``) and profiling stages (``profile``).

It imports only ``contract`` and JAX / Flax / optax (and jax-privacy); the harness reaches it through ``api``,
the names of ``contract.interface.EXPORTS``.

float64 is the ground truth of the agreement checks, so 64-bit types are enabled on import; every array
this package creates carries an explicit dtype, so float32 runs stay float32.

bfloat16 (``precision``): XLA may keep a bfloat16 op's result in float32 inside a fusion
(``xla_allow_excess_precision``, on by default), and where it does depends on how each method's program is fused:
the same forward then rounds differently in ``loop``, ``vmap`` and ``per_layer``, and decides ReLU / max-pool
differently. torch rounds every bfloat16 op's result. ``--xla_allow_excess_precision=false`` is added to
XLA_FLAGS here (before JAX starts its backend; a value already set wins), so every JAX program rounds where its
ops say, as torch does (measured: docs/precision.md). float32 and float64 programs are unaffected.
"""
import os

EXCESS_PRECISION_FLAG = "--xla_allow_excess_precision"
if EXCESS_PRECISION_FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {EXCESS_PRECISION_FLAG}=false".strip()

import jax  # noqa: E402 - after XLA_FLAGS

jax.config.update("jax_enable_x64", True)
