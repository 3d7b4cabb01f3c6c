"""Per-example gradient norms and clipped sums WITHOUT per-example gradients (mirrors ``torch_impl.ghost``).

DP-SGD needs each example's gradient norm and the clipped sum ``sum_b m_b c_b g_b``, never the (B x |params|)
per-example tensor. Both strategies here start from ``per_layer``'s one forward and one backward to the OUTPUTS
of every parameterised layer (zero probes on the outputs, ``jax.grad`` of the SUM of per-example losses, so
each cotangent g_b is that example's own), with each layer's input a_b kept, and use the rules of each
layer's KIND (``jax_impl.rules``; no layer is named here):

Norms (``layer_norms_sq``): a kind's norm sampler where it has one and its cost model says so (linear: rank
  one on one position, Gram or materialise on T positions; conv: Gram or materialise per layer, measured in
  ``rules/conv.py``; embed: per distinct token row, never (B x V x d)); any other layer ("materialised": no
  kind, an instance the rule does not cover, a layer called twice, or the cost model's choice) writes its
  per-example gradient and takes its norm.
Clipped sums:
  ``ghost_clipped_sum``: a SECOND batched backward of sum_b m_b c_b loss_b (c under stop_gradient): plain
      ``jax.grad`` of the model, so it pays XLA:CPU's convolution backward-filter, as ``dp.make_sgd_step`` does;
  ``bk_clipped_sum`` (book-keeping, Bu et al. 2023): each layer's clipped sum straight from (a, c m g), no
      second backward: the kind's clipped-sum rule (linear a^T (c m g), conv per-tap matmuls, embed a
      scatter-add into the rows), or for a materialised layer the weighted sum sum_b c_b m_b dW_b of the
      per-example gradient its norm already wrote (Bu et al.'s mixed variant). On the seed CNN neither conv
      route touches XLA's backward-filter convolution, the slow part of JAX's own SGD step here.

Masks: ``m_b`` scales the clip factor (c_b m_b), not the loss, so the result is sum_b m_b c_b g_b for any
float mask with c_b from the unmasked gradient (for 0/1 masks the same as masking the loss, torch's choice).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from contract.spec import DEFAULT_MODEL
from jax_impl import rules
from jax_impl.model import PRECISION, Net, apply, loss_fn, resolve
from jax_impl.per_layer import fill, forward_to_outputs, layer_grads, layers, site_layer, zero_probes

Params = nnx.State
Arrays = dict[str, jax.Array]


def example_losses(logits: jax.Array, y: jax.Array, loss: str) -> jax.Array:
    """(B,) each example's own loss: ``model.loss_fn`` of a batch of one, row by row."""
    return jax.vmap(lambda lg, t: loss_fn(lg[None], t[None], loss))(logits, y)


def factors_from_norms(norms: jax.Array, clip: float) -> jax.Array:
    """(B,) clip factors ``min(1, clip / n)``, NaN -> 1: ``dp.clip_factors``' formula (clip = inf -> 1)."""
    return jnp.nan_to_num(jnp.minimum(clip / norms, 1.0), nan=1.0)


def _outputs(params: Params, x: jax.Array, y: jax.Array, loss: str, model: str | Net) -> tuple[Arrays, Arrays, jax.Array]:
    """(site inputs, per-example site output cotangents, (B,) per-example losses) from one forward + backward."""
    def total(p: Arrays) -> tuple[jax.Array, tuple[Arrays, jax.Array]]:
        logits, inputs = forward_to_outputs(params, x, p, model)
        losses = example_losses(logits, y, loss)
        return losses.sum(), (inputs, losses)  # the sum: each example's cotangent is its own gradient

    cots, (inputs, losses) = jax.grad(total, has_aux=True)(zero_probes(params, x, model))
    return inputs, cots, losses


def _split(found: dict[str, nnx.Module], inputs: Arrays, cots: Arrays) -> tuple[Arrays, dict[str, Arrays]]:
    """({layer: (B,) squared norm} of cheap-rule layers, {layer: {leaf: (B, ...)}} of materialised layers)."""
    cheap, materialised = {}, {}
    for name, layer in found.items():
        sites = [s for s in inputs if site_layer(s) == name]
        norm = rules.norm_sq(layer, inputs[sites[0]], cots[sites[0]]) if len(sites) == 1 else None
        if norm is None:
            materialised[name] = layer_grads(name, layer, inputs, cots)
        else:
            cheap[name] = norm
    return cheap, materialised


def _per_example_sq(leaves: Arrays) -> jax.Array:
    return sum(rules.sq(v) for v in leaves.values())


def layer_norms_sq(
    inputs: Arrays, cotangents: Arrays, model: str | Net = DEFAULT_MODEL, params: Params | None = None
) -> Arrays:
    """{layer: (B,) squared per-example norm of that layer's gradient}; see the module doc. ``params`` is read
    only by the fallback (layers of no kind); the kinds' rules need the layer's options alone."""
    net = resolve(model)
    found = layers(params if params is not None else net.abstract_state, net)
    cheap, materialised = _split(found, inputs, cotangents)
    return {name: cheap[name] if name in cheap else _per_example_sq(materialised[name]) for name in found}


def _norms(sq: Arrays) -> jax.Array:
    return jnp.sqrt(sum(sq.values()))


def ghost_norms(params: Params, x: jax.Array, y: jax.Array, *, loss: str, model: str | Net = DEFAULT_MODEL) -> jax.Array:
    """(B,) each example's global gradient L2 norm, without writing a cheap-rule layer's per-example gradients."""
    inputs, cots, _ = _outputs(params, x, y, loss, model)
    return _norms(layer_norms_sq(inputs, cots, model, params))


def _weights(norms: jax.Array, clip: float, mask: jax.Array | None) -> jax.Array:
    c = factors_from_norms(norms, clip)
    return c if mask is None else c * jnp.asarray(mask, c.dtype)


def _masked_sum(losses: jax.Array, mask: jax.Array | None) -> jax.Array:
    return losses.sum() if mask is None else (losses * jnp.asarray(mask, losses.dtype)).sum()


def ghost_clipped_sum(
    params: Params, x: jax.Array, y: jax.Array, *, clip: float, loss: str, mask: jax.Array | None = None,
    model: str | Net = DEFAULT_MODEL,
) -> tuple[Params, jax.Array]:
    """(sum_b m_b c_b g_b shaped like params, sum_b m_b loss_b): ghost norms, then a second backward."""
    inputs, cots, losses = _outputs(params, x, y, loss, model)
    weights = jax.lax.stop_gradient(_weights(_norms(layer_norms_sq(inputs, cots, model, params)), clip, mask))

    def weighted(p: Params) -> jax.Array:
        return (weights * example_losses(apply(p, x, model), y, loss)).sum()

    return jax.grad(weighted)(params), _masked_sum(losses, mask)


def bk_clipped_sum(
    params: Params, x: jax.Array, y: jax.Array, *, clip: float, loss: str, mask: jax.Array | None = None,
    model: str | Net = DEFAULT_MODEL,
) -> tuple[Params, jax.Array]:
    """(sum_b m_b c_b g_b shaped like params, sum_b m_b loss_b) by book-keeping: no second backward.

    A materialised layer (seed CNN: both convs, 288 / 18432 weights per example) already holds its per-example
    gradient, so its clipped sum is the weighted sum ``tensordot(c m, dW)`` of that."""
    inputs, cots, losses = _outputs(params, x, y, loss, model)
    found = layers(params, model)
    with rules.bookkeeping():  # a materialised layer's sum is a tensordot here: the norm forms are chosen for bk
        cheap, materialised = _split(found, inputs, cots)
    sq = list(cheap.values()) + [_per_example_sq(leaves) for leaves in materialised.values()]
    weights = _weights(_norms(dict(enumerate(sq))), clip, mask)
    sums: dict[str, Arrays] = {}
    for name, leaves in materialised.items():
        sums[name] = {leaf: jnp.tensordot(weights, v, axes=1, precision=PRECISION) for leaf, v in leaves.items()}
    for name in cheap:
        site = next(s for s in inputs if site_layer(s) == name)
        sums[name] = rules.clipped_sum(found[name], inputs[site], cots[site], weights)
    return fill(params, sums, model), _masked_sum(losses, mask)
