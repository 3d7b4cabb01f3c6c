"""The framework-neutral contract at the bottom of the repository (numpy and the standard library only).

Both sides (``torch_impl``, ``jax_impl``) and the harness (``compare``) build on it; it imports neither a side,
the harness, nor a framework:
  spec        workloads, shapes, losses, input checks and their errors, synthetic batches
  weights     the canonical weights file (safetensors) and its checks
  privacy     DP-SGD hyper-parameter checks
  sites       decision sites (ReLU gates, max-pool winners) and their rounding margins
  devices     device-count checks for data-parallel runs
  cost_model  the Gram-versus-materialise choice of the norm rules, with its measurements
  interface   the ``FrameworkSide`` Protocol: what each side provides to the harness
  peers       the registry of peer libraries' methods and steps, and every method's figure marker
``tests/test_imports.py`` pins these directions by reading every module's imports.
"""
