"""Kind "conv" (torch ``nn.Conv2d`` NCHW / OIHW, flax ``nnx.Conv`` NHWC / HWIO) over kernel size, stride,
padding (numbers per side, and the string forms), dilation, bias and groups. Grouped convolutions (groups != 1)
and torch's "same" padding with an even dilated kernel extent (asymmetric) are not covered by the rule: the
engine must fall back and still match."""
from __future__ import annotations

import numpy as np
import pytest
import torch.nn as nn
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st

from .checker import FRAMEWORKS, SETTINGS, abstract, check_case, seeds


@st.composite
def geometries(draw: st.DrawFn, framework: str) -> dict:
    """One conv instance and input size: channels (multiples of ``groups``), kernel, stride, dilation, padding
    (torch: (ph, pw), "valid" or "same" at stride 1; JAX: ((top, bottom), (left, right)), "VALID" or "SAME"),
    and an input at least one dilated kernel extent wide."""
    groups = draw(st.sampled_from((1, 1, 2)))
    k = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    extent = [d * (n - 1) + 1 for d, n in zip(dilation, k)]
    pads = st.integers(0, 2)
    if framework == "torch":
        forms = [(draw(pads), draw(pads)), "valid"] + (["same"] if stride == (1, 1) else [])
    else:
        forms = [((draw(pads), draw(pads)), (draw(pads), draw(pads))), "VALID", "SAME"]
    return {"groups": groups, "c_in": groups * draw(st.integers(1, 3)), "c_out": groups * draw(st.integers(1, 3)),
            "k": k, "stride": stride, "dilation": dilation, "padding": draw(st.sampled_from(forms)),
            "bias": draw(st.booleans()), "hw": tuple(draw(st.integers(e, e + 3)) for e in extent)}


def covered(framework: str, geo: dict) -> bool:
    """What the rule is documented to cover: groups 1; torch's "same" only with even padding on both sides."""
    if geo["groups"] != 1:
        return False
    if framework == "torch" and geo["padding"] == "same":
        return all(d * (n - 1) % 2 == 0 for d, n in zip(geo["dilation"], geo["k"]))
    return True


def make_conv(framework: str, geo: dict) -> object:
    if framework == "torch":
        return nn.Conv2d(geo["c_in"], geo["c_out"], geo["k"], stride=geo["stride"], padding=geo["padding"],
                         dilation=geo["dilation"], groups=geo["groups"], bias=geo["bias"])
    return abstract(lambda: nnx.Conv(geo["c_in"], geo["c_out"], geo["k"], strides=geo["stride"],
                                     padding=geo["padding"], kernel_dilation=geo["dilation"],
                                     feature_group_count=geo["groups"], use_bias=geo["bias"], rngs=nnx.Rngs(0)))


@pytest.mark.parametrize("framework", FRAMEWORKS)
@SETTINGS
@given(data=st.data(), b=st.integers(1, 4), seed=seeds)
def test_conv2d(framework: str, data: st.DataObject, b: int, seed: int) -> None:
    geo = data.draw(geometries(framework), label="geometry")
    h, w = geo.pop("hw")
    rng = np.random.default_rng(seed)
    shape = (b, geo["c_in"], h, w) if framework == "torch" else (b, h, w, geo["c_in"])
    check_case(make_conv(framework, geo), rng.standard_normal(shape), rng, kind="conv", route="conv",
               covered=covered(framework, geo))
