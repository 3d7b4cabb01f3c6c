"""Bytes one data-parallel DP-SGD step communicates: the formula behind the records' ``communication`` field and
docs/distributed.md. Imports neither framework.

Every strategy all-reduces the same buffer once per step: the clipped gradient SUM of the replica's examples (P
numbers, P = the workload's parameter count), its loss sum and its real-example count (2 more), in the
parameters' storage dtype (float32 for bfloat16 compute: the clipped sums are float32, ``contract.spec.MIXED``). materialize clips per-example gradients it holds; ghost and bk compute each example's norm from that
example's own activations and output gradients, on the replica that holds it, so none of them sends anything
else (no per-example norms, no activations). The noise is not sent: every replica draws the same z from one seed.

Per process, a ring all-reduce (gloo's and NCCL's large-message algorithm) sends 2 (N - 1) / N times the buffer
and receives as much; N = 1 sends nothing. XLA's CPU/GPU all-reduce moves the same volume for large buffers.
"""
from __future__ import annotations

from contract.spec import Workload, check_model, storage_dtype

ITEMSIZE = {"float32": 4, "float64": 8}
EXTRA_SCALARS = 2  # the loss sum and the real-example count, in the same buffer


def allreduce_elements(model: str | Workload) -> int:
    """Numbers in the one all-reduce of a step: P + 2, the same for materialize, ghost and bk."""
    return check_model(model).num_params + EXTRA_SCALARS


def step_bytes(model: str | Workload, dtype: str, replicas: int) -> dict[str, int | str]:
    """{"allreduce_bytes": the buffer, "sent_per_process_bytes": 2 (N - 1) / N of it (ring), "formula": ...};
    ``dtype`` is the training dtype (a mixed one sends its storage dtype)."""
    dtype = storage_dtype(dtype)
    if dtype not in ITEMSIZE:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {tuple(ITEMSIZE)}")
    if replicas < 1:
        raise ValueError(f"replicas must be a positive integer, got {replicas}")
    payload = allreduce_elements(model) * ITEMSIZE[dtype]
    return {"allreduce_bytes": payload, "sent_per_process_bytes": 2 * (replicas - 1) * payload // replicas,
            "formula": "(P + 2) x itemsize, once per step; per process 2 (N - 1) / N of it (ring all-reduce)"}
