"""The JAX / Flax NNX side, mirroring ``torch_impl`` module for module: every registered workload (``models``),
canonical <-> native weights (``weights``), per-sample gradients by method (``per_sample``: ``vmap(grad)``, the
per-layer-kind rules of ``per_layer`` / ``rules``, im2col convolutions), DP-SGD steps (``dp``, ``ghost``,
jax-privacy's ``jax_privacy_step``), data-parallel runs on a device mesh (``distributed``), non-smooth decisions
and their replay (``decisions``) and profiling stages (``profile``).

It imports only ``contract`` and JAX / Flax / optax (and jax-privacy); the harness reaches it through ``api``,
the names of ``contract.interface.EXPORTS``.

float64 is the ground truth of the agreement checks, so 64-bit types are enabled on import; every array
this package creates carries an explicit dtype, so float32 runs stay float32.
"""
import jax

jax.config.update("jax_enable_x64", True)
