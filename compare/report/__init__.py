"""The results document, generated from the committed results (``python -m compare.report paper/ --out docs/``).

``sources`` reads every results file under the results directory and its provenance (command, commit, CPU,
versions); ``tables`` and ``facts`` turn the data into tables and the numbers the prose cites; ``summary`` is the
README's answers-first table; ``pages_*`` write the pages of ``docs/results/``; ``cli`` writes them or, with
``--check``, lists every line where the committed documents differ from what the data gives.
"""
