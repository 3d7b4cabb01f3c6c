"""The mirrored models: same forward, same losses, and the one flatten-order difference handled correctly."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import functional_call

import jax_impl.model as jm
import jax_impl.weights as jw
import torch_impl.model as tm
import torch_impl.weights as tw
from compare.frameworks import FRAMEWORKS
from compare.spec import LOSSES, NUM_CLASSES, PARAM_SHAPES, InputError, make_batch
from compare.weights import init_weights
from helpers import CROSS_RTOL_FLOAT64

FEATURES = (64, 12, 12)  # (C, H, W) after the max-pool; fc1 reads them flattened


def torch_logits(weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """float64 logits through torch_impl's model and weight conversion."""
    params = tw.to_native(weights, "float64", "cpu")
    with torch.no_grad():
        return functional_call(tm.SimpleCNN(), params, (torch.as_tensor(x, dtype=torch.float64),)).numpy()


def jax_logits(weights: dict[str, np.ndarray], x: np.ndarray, params: nnx.State | None = None) -> np.ndarray:
    """float64 logits through jax_impl's model and weight conversion (or through given native ``params``)."""
    params = jw.to_native(weights, "float64", "cpu") if params is None else params
    return np.asarray(jm.apply(params, jnp.asarray(x, jnp.float64)))


def torch_features(weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The pooled activations (B, 64, 12, 12) that fc1 reads, computed independently of both models."""
    w = {k: torch.as_tensor(v, dtype=torch.float64) for k, v in weights.items()}
    h = F.relu(F.conv2d(torch.as_tensor(x, dtype=torch.float64), w["conv1.weight"], w["conv1.bias"]))
    h = F.relu(F.conv2d(h, w["conv2.weight"], w["conv2.bias"]))
    return F.max_pool2d(h, 2).numpy()


def test_torch_model_parameters_are_the_canonical_ones():
    assert {k: tuple(v.shape) for k, v in tm.SimpleCNN().state_dict().items()} == PARAM_SHAPES


@settings(max_examples=4)
@given(seed=st.integers(0, 2**16), scale=st.sampled_from([1.0, 4.0]))
def test_forward_and_losses_agree_in_float64(seed: int, scale: float):
    """Log-probs and both losses, torch vs JAX; ``scale`` enlarges the weights so the softmax saturates more."""
    weights = {k: (v * scale).astype(np.float32) for k, v in init_weights(seed).items()}
    x, y = make_batch(4, seed=seed)
    lt, lj = torch_logits(weights, x), jax_logits(weights, x)
    pt = tm.log_probs(torch.as_tensor(lt)).numpy()
    pj = np.asarray(jm.log_probs(jnp.asarray(lj)))
    np.testing.assert_allclose(pj, pt, rtol=0, atol=CROSS_RTOL_FLOAT64 * np.abs(pt).max())
    for loss in LOSSES:
        vt = float(tm.loss_fn(torch.as_tensor(lt), torch.as_tensor(y), loss))
        vj = float(jm.loss_fn(jnp.asarray(lj), jnp.asarray(y), loss))
        assert vj == pytest.approx(vt, rel=CROSS_RTOL_FLOAT64), loss


# --- the two losses -----------------------------------------------------------------------------------------


def loss_on(framework: str, logits: np.ndarray, y: np.ndarray, loss: str) -> float:
    if framework == "torch":
        return float(tm.loss_fn(torch.as_tensor(logits), torch.as_tensor(y), loss))
    return float(jm.loss_fn(jnp.asarray(logits), jnp.asarray(y), loss))


@pytest.fixture(scope="module")
def logits_and_labels() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    return 3.0 * rng.standard_normal((6, NUM_CLASSES)), rng.integers(0, NUM_CLASSES, 6)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_seed_loss_is_minus_mean_logit_of_the_label(framework: str, logits_and_labels):
    """The seed's ``nll_loss`` on raw logits (its forward discards log_softmax with ``output = x``)."""
    logits, y = logits_and_labels
    expected = -logits[np.arange(len(y)), y].mean()
    assert loss_on(framework, logits, y, "seed") == pytest.approx(expected, rel=1e-14)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_nll_log_softmax_is_cross_entropy(framework: str, logits_and_labels):
    logits, y = logits_and_labels
    m = logits.max(axis=1)
    logsumexp = m + np.log(np.exp(logits - m[:, None]).sum(axis=1))
    expected = (logsumexp - logits[np.arange(len(y)), y]).mean()
    assert expected == pytest.approx(float(F.cross_entropy(torch.as_tensor(logits), torch.as_tensor(y))), rel=1e-14)
    assert loss_on(framework, logits, y, "nll_log_softmax") == pytest.approx(expected, rel=1e-14)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_the_two_losses_differ(framework: str, logits_and_labels):
    """They differ by the mean logsumexp of the logits: a silent swap would be caught."""
    logits, y = logits_and_labels
    assert abs(loss_on(framework, logits, y, "seed") - loss_on(framework, logits, y, "nll_log_softmax")) > 1.0


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_unknown_loss(framework: str, logits_and_labels):
    logits, y = logits_and_labels
    with pytest.raises(InputError, match="unknown loss 'cross_entropy'"):
        loss_on(framework, logits, y, "cross_entropy")


# --- the flatten order before fc1 (torch: C,H,W; JAX runs NHWC and flattens C,H,W too) --------------------------

PROBE = (5, 3, 7)  # the (c, h, w) feature that fc1's first unit reads
BIAS = 100.0  # keeps fc1's ReLU open, so logit 0 = feature + BIAS exactly


def probe_weights(base: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The seed's convolutions, then fc1 unit 0 reading ONE pooled feature at (c, h, w) = PROBE, and logit 0 =
    that unit: logit 0 = feature[PROBE] + BIAS, every other logit 0."""
    w = {k: v.copy() for k, v in base.items()}
    w["fc1.weight"] = np.zeros(PARAM_SHAPES["fc1.weight"], np.float32)
    w["fc1.weight"][0, np.ravel_multi_index(PROBE, FEATURES)] = 1.0  # canonical = torch.flatten order (C, H, W)
    w["fc1.bias"] = np.zeros(PARAM_SHAPES["fc1.bias"], np.float32)
    w["fc1.bias"][0] = BIAS
    w["fc2.weight"] = np.zeros(PARAM_SHAPES["fc2.weight"], np.float32)
    w["fc2.weight"][0, 0] = 1.0
    w["fc2.bias"] = np.zeros(PARAM_SHAPES["fc2.bias"], np.float32)
    return w


def test_fc1_reads_the_same_feature_on_both_sides(weights):
    x, _ = make_batch(4, seed=5)
    w = probe_weights(weights)
    feature = torch_features(w, x)[(slice(None), *PROBE)]
    # The wrong order (the canonical column read as an (H, W, C) index) would pick another feature,
    # with other values: so the check below can tell the two orderings apart.
    wrong = np.unravel_index(np.ravel_multi_index(PROBE, FEATURES), (12, 12, 64))
    wrong_feature = torch_features(w, x)[:, wrong[2], wrong[0], wrong[1]]
    assert np.abs(wrong_feature - feature).min() > 1e-3

    for logits in (torch_logits(w, x), jax_logits(w, x)):
        np.testing.assert_allclose(logits[:, 0] - BIAS, feature, rtol=0, atol=1e-12)
        np.testing.assert_array_equal(logits[:, 1:], 0.0)


def test_an_nhwc_flatten_would_be_caught(weights, monkeypatch):
    """JAX flattens in torch's (C, H, W) order (``models.common.flatten_chw``), so fc1's kernel is the plain
    transpose of the canonical weight (one layout rule per layer kind). Flattening the NHWC map as it lies
    would read another feature: the probe above catches it."""
    import jax_impl.models.seed_cnn as seed

    x, _ = make_batch(4, seed=5)
    w = probe_weights(weights)
    feature = torch_features(w, x)[(slice(None), *PROBE)]
    monkeypatch.setattr(seed, "flatten_chw", lambda h: h.reshape(h.shape[0], -1))
    assert np.abs(jax_logits(w, x)[:, 0] - BIAS - feature).min() > 1e-3
