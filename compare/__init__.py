"""The harness: it runs both framework sides on the same workloads and compares them, in three sub-systems over a
shared core.

Core: ``frameworks`` (``side(name)``: a side's interface, ``contract.interface.FrameworkSide``; the only way the
harness reaches ``torch_impl`` / ``jax_impl``), ``weights`` (``init_weights`` through the torch side, over the
file I/O of ``contract.weights``), ``env`` (what each framework sees; GPU memory sharing), ``lock`` (installed
versions against the lock), ``paths`` (``--out`` checks); ``spec`` and ``devices`` are ``contract.spec`` /
``contract.devices`` under their former names. Sub-packages:
  ``agreement``  do the frameworks agree? (errors vs float64, the seed CNN's numpy oracle, decision replay)
  ``benchmark``  how fast? (timing protocol, per-point processes, sweep, floor, results, summary, figures)
  ``training``   DP-SGD training (data, privacy accounting, the trainer)
Imports flow one way: the core imports no sub-package, ``agreement`` and ``training`` only the core,
``benchmark`` the core and ``agreement``. Entry points: ``python -m compare.run | figures | profile | train |
env``. Nothing here imports torch or jax at module top level; each side is imported lazily where needed.
"""
