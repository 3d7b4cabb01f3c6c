"""The PyTorch side: every registered workload (``models``), canonical <-> native weights (``weights``),
per-sample gradients by method (``per_sample``: the torch.func ``vmap(grad)``, the per-layer-kind rules of
``per_layer`` / ``rules``, Opacus' modes), DP-SGD steps (``dp``, ``ghost``), data-parallel runs
(``distributed``), non-smooth decisions and their replay (``decisions``) and profiling stages (``profile``).

It imports only ``contract`` and torch (and Opacus); the harness reaches it through ``api``, the names of
``contract.interface.EXPORTS``.
"""
