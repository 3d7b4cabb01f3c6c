"""Framework-neutral harness, in three sub-systems over a shared core.

Core: ``spec`` (the contract both sides implement), ``weights`` (the shared safetensors file), ``frameworks``
(lazy registry of the two implementations), ``env`` (what each framework sees). Sub-packages, each importing
only the core and its own modules:
  ``agreement``  do the frameworks agree? (errors vs float64, numpy oracle, decision replay)
  ``benchmark``  how fast? (timing protocol, per-point processes, sweep, floor, results, summary, figures)
  ``training``   DP-SGD training (data, privacy accounting, the trainer)
Entry points: ``python -m compare.run | figures | profile | train | env``. Nothing here imports torch or jax at
module top level; each side is imported lazily where needed.
"""
