"""Framework-neutral harness: the shared model spec, weights file, agreement checks, CLI.

Nothing here imports torch or jax at module top level; each side is imported lazily where needed.
"""
