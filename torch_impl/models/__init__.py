"""The workloads in PyTorch, one file per network (mirrored by ``jax_impl.models``); names = ``contract.spec.MODELS``.

Adding a workload: one model file here, its mirror in ``jax_impl/models/``, an entry in ``contract.spec.MODELS``
and one in each ``CLASSES``; no per-layer rule changes (``torch_impl.rules`` finds its layers by kind).
"""
from __future__ import annotations

import torch.nn as nn

from torch_impl.models.cifar10_cnn import Cifar10CNN
from torch_impl.models.embed import EmbedNet
from torch_impl.models.ffnn import FFNN
from torch_impl.models.logreg import LogReg
from torch_impl.models.lstm import LSTMNet
from torch_impl.models.mnist_cnn import MnistCNN
from torch_impl.models.seed_cnn import SimpleCNN
from torch_impl.models.transformer import TransformerNet
from torch_impl.models.wrn import WRN

CLASSES: dict[str, type[nn.Module]] = {
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
