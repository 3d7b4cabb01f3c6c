"""PyTorch side: the seed CNN, canonical<->native weights, per-sample gradients via torch.func."""
