"""Panels: studies of one question over a range of settings, built on the benchmark's protocol and records.

``seq_length``  the transformer's training steps against the sequence length T: the records' tables, crossings
                and figure (from the data alone), and the per-layer norm routes a point records;
``points``      each (framework, setting) point in its own process, a crash or timeout kept as failure records.
The measuring entry point is ``scripts/seq_length_panel.py``; nothing here imports a framework side.
"""
