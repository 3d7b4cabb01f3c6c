"""Framework-neutral harness, in three sub-systems over a shared core.

Core: ``spec`` (the contract both sides implement), ``weights`` (the shared safetensors file), ``frameworks``
(lazy registry of the two implementations), ``env`` (what each framework sees; GPU memory sharing), ``devices``
(``--devices N`` checks). Sub-packages:
  ``agreement``  do the frameworks agree? (errors vs float64, numpy oracle, decision replay)
  ``benchmark``  how fast? (timing protocol, per-point processes, sweep, floor, results, summary, figures)
  ``training``   DP-SGD training (data, privacy accounting, the trainer)
Imports flow one way: the core imports no sub-package, ``agreement`` and ``training`` only the core,
``benchmark`` the core and ``agreement``. Entry points: ``python -m compare.run | figures | profile | train |
env``. Nothing here imports torch or jax at module top level; each side is imported lazily where needed.
"""
