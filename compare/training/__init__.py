"""DP-SGD training in both frameworks: data (``data``), privacy accounting (``privacy``), the command line's options
and their checks (``options``), the trainer (``cli``, ``python -m compare.train``), its report (``report``) and its
multi-process runs (``processes``)."""
