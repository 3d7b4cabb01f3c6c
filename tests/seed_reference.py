"""The seed script (functorch per-sample-gradients tutorial, ../shared/seed/000_4f171797c82b9103.txt), kept
line for line except:
  - functorch's ``make_functional_with_buffers`` -> ``torch.func.functional_call`` (the retired API's successor);
  - the script's globals (``model``, ``batch_size``, ``device``) become arguments; device is the caller's.
The forward keeps the seed's bug on purpose (``output = x`` discards log_softmax), so ``loss_fn`` is nll on
raw logits: what ``loss="seed"`` reproduces.

Weights: the seed calls ``torch.manual_seed(0)``, draws its data ON CUDA (CUDA's own generator), then builds
the model, so the CPU generator is untouched when ``SimpleCNN()`` initialises its parameters. On CPU the same
weights therefore come from building the model right after ``torch.manual_seed(0)`` (``seed_model``);
drawing the data first on CPU would consume the CPU generator and give other weights.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap


# Here's a simple CNN
class SimpleCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = self.conv1(x)
        x = F.relu(x)
        x = self.conv2(x)
        x = F.relu(x)
        x = F.max_pool2d(x, 2)
        x = torch.flatten(x, 1)
        x = self.fc1(x)
        x = F.relu(x)
        x = self.fc2(x)
        output = F.log_softmax(x, dim=1)  # noqa: F841 -- the seed's bug, kept: the log-probs are discarded
        output = x
        return output


def loss_fn(predictions, targets):
    return F.nll_loss(predictions, targets)


def seed_model() -> SimpleCNN:
    """The seed's model: parameters initialised right after ``torch.manual_seed(0)`` (see the module note)."""
    torch.manual_seed(0)
    return SimpleCNN()


# Conceptually, per-sample-gradient computation is equivalent to: for each sample
# of the data, perform a forward and a backward pass to get a gradient.
def compute_grad(model, sample, target):
    sample = sample.unsqueeze(0)
    target = target.unsqueeze(0)
    prediction = model(sample)
    loss = loss_fn(prediction, target)
    return torch.autograd.grad(loss, list(model.parameters()))


def compute_sample_grads(model, data, targets):
    batch_size = data.shape[0]
    sample_grads = [compute_grad(model, data[i], targets[i]) for i in range(batch_size)]
    sample_grads = zip(*sample_grads)
    sample_grads = [torch.stack(shards) for shards in sample_grads]
    return sample_grads


def ft_compute_sample_grads(model, data, targets):
    """The seed's functorch section; returns the gradients in ``model.parameters()`` order, like the loop."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def compute_loss(params, buffers, sample, target):
        batch = sample.unsqueeze(0)
        targets = target.unsqueeze(0)
        predictions = functional_call(model, (params, buffers), (batch,))
        loss = loss_fn(predictions, targets)
        return loss

    ft_compute_grad = grad(compute_loss)
    ft_compute_sample_grad = vmap(ft_compute_grad, in_dims=(None, None, 0, 0))
    ft_per_sample_grads = ft_compute_sample_grad(params, buffers, data, targets)
    return [ft_per_sample_grads[name] for name in params]
