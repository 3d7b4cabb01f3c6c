"""The workloads in Flax NNX, one file per network (mirrors ``torch_impl.models``, same attribute names, so
the module paths are the canonical ``state_dict`` prefixes)."""
from __future__ import annotations

from flax import nnx

from jax_impl.models.cifar10_cnn import Cifar10CNN
from jax_impl.models.embed import EmbedNet
from jax_impl.models.ffnn import FFNN
from jax_impl.models.logreg import LogReg
from jax_impl.models.lstm import LSTMNet
from jax_impl.models.mnist_cnn import MnistCNN
from jax_impl.models.seed_cnn import SimpleCNN
from jax_impl.models.transformer import TransformerNet
from jax_impl.models.wrn import WRN

CLASSES: dict[str, type[nnx.Module]] = {
    "seed_cnn": SimpleCNN,
    "logreg": LogReg,
    "ffnn": FFNN,
    "mnist_cnn": MnistCNN,
    "cifar10_cnn": Cifar10CNN,
    "embed": EmbedNet,
    "lstm": LSTMNet,
    "transformer": TransformerNet,
    "wrn16_4": WRN,
}
