import numpy as np

from compare.spec import PARAM_SHAPES
from jax_impl.per_sample import per_sample_grads as jax_grads
from torch_impl.per_sample import per_sample_grads as torch_grads


def test_both_sides_agree_in_float64(weights, batch):
    x, y = batch
    t = torch_grads(weights, x, y, method="vmap", dtype="float64")
    j = jax_grads(weights, x, y, method="vmap", dtype="float64")
    for name, shape in PARAM_SHAPES.items():
        assert t[name].shape == j[name].shape == (x.shape[0], *shape)
        np.testing.assert_allclose(j[name], t[name], rtol=0, atol=1e-10 * np.abs(t[name]).max())
