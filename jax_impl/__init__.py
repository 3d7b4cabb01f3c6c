"""JAX/Flax NNX side: the seed CNN, canonical<->native weights, per-sample gradients via jax.grad + vmap.

float64 is the ground truth of the agreement checks, so 64-bit types are enabled on import; every array
this package creates carries an explicit dtype, so float32 runs stay float32.
"""
import jax

jax.config.update("jax_enable_x64", True)
