"""Agreement of the two frameworks' per-sample gradients: errors vs a float64 reference, the seed CNN's numpy
float64 oracle (``seed_oracle``), and the explanation of every float32 outlier by decision replay.

Imports: errors <- seed_oracle <- explain <- report (no cycles). ``run_agreement`` is the entry point.
"""
from compare.agreement.errors import REPLAY_TOLERANCE, TOLERANCE, compare_grads
from compare.agreement.report import AgreementReport, run_agreement

__all__ = ["REPLAY_TOLERANCE", "TOLERANCE", "AgreementReport", "compare_grads", "run_agreement"]
