"""How fast: the timing protocol (``targets``), one process per point (``point``), the sweep (``sweep``), the
floor (``floor``), the results file (``results``), the summary (``summary``), figures (``figures`` lays out what
``plots`` draws in ``compare.style``), the LaTeX tables (``latex_tables``) and profiles; ``cli`` is
``python -m compare.run``. Imports flow config -> targets/point/floor/results -> sweep -> cli (no cycles)."""
