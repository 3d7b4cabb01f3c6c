"""DP-SGD training in both frameworks: data (``data``), privacy accounting (``privacy``), the trainer (``cli``,
``python -m compare.train``)."""
