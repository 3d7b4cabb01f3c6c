"""One panel point in its own process: the worker appends JSON lines ({"kind": "point" | "record" | "done",
"data": ...}) to a result file, so a killed worker keeps what it measured; a crash, kill or timeout becomes failure
records (``compare.benchmark.results.failure_record``) of the methods it did not finish, with why."""
from __future__ import annotations

import collections
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

FAILED = "error"


def status_of(err: BaseException) -> str:
    """A failed call's record status: "oom" where it ran out of memory, else "error"."""
    text = f"{type(err).__name__}: {err}"
    return "oom" if isinstance(err, MemoryError) or "OutOfMemory" in text or "RESOURCE_EXHAUSTED" in text else FAILED


def read_lines(path: Path) -> list[dict]:
    """The complete JSON lines a worker wrote (a line cut by a kill is dropped)."""
    if not path.is_file():
        return []
    text = path.read_text()
    return [json.loads(line) for line in text[:text.rfind("\n") + 1].splitlines() if line]


def run_forwarding(cmd: list[str], env: dict[str, str], timeout: float) -> tuple[int | None, str]:
    """Run ``cmd``, copying its stderr (the worker's progress log) to ours line by line; (exit code, or None after
    a timeout kill; its last 5 stderr lines)."""
    tail: collections.deque[str] = collections.deque(maxlen=5)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def pump() -> None:
        for line in proc.stderr:
            tail.append(line.rstrip("\n"))
            sys.stderr.write(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        code = None
    reader.join(timeout=10)
    proc.stderr.close()
    return code, "\n".join(tail)


def run_isolated(spec: dict, env: dict[str, str], timeout: float, *, script: Path,
                 base: Callable[[dict, str], dict], header: dict, extra: dict | None = None) -> dict:
    """The point ``spec`` measured by ``python script --worker SPEC --result FILE`` in a fresh process (``env``,
    killed after ``timeout`` s); returns {"point": the worker's header (else ``header``), "records": [...]}. A
    crash, kill or timeout becomes failure records (``base(spec, method)`` + status timeout / oom / error, with
    why, + ``extra`` fields) of the methods of ``spec["methods"]`` it did not finish."""
    from compare.benchmark.results import failure_record

    with tempfile.TemporaryDirectory(prefix="panel-point-") as tmp:
        result = Path(tmp) / "point.jsonl"
        spec = {**spec, "launched_at": time.time()}
        cmd = [sys.executable, str(script), "--worker", json.dumps(spec), "--result", str(result)]
        fate, t0 = None, time.perf_counter()
        code, tail = run_forwarding(cmd, env, timeout)
        if code is None:
            fate = ("timeout", f"no result within {timeout:g} s (process killed)")
        elif code == -9:
            fate = ("oom", "killed by SIGKILL (most likely the out-of-memory killer)")
        elif code != 0:
            fate = (FAILED, f"exit code {code}: {tail}")
        lines = read_lines(result)
    point = next((ln["data"] for ln in lines if ln["kind"] == "point"), None) or {
        **header, "layers_error": fate[1] if fate else "no point header"}
    done = next((ln["data"] for ln in lines if ln["kind"] == "done"), {})
    point.update(done, process_wall_s=time.perf_counter() - t0, process_failure=fate and list(fate))
    records = [ln["data"] for ln in lines if ln["kind"] == "record"]
    have = {r["method"] for r in records}
    for method in spec["methods"]:
        if method not in have:
            status, reason = fate or (FAILED, "the worker ended without a record")
            records.append(failure_record(base(spec, method), status, reason, **(extra or {})))
    return {"point": point, "records": records}


def write_line(result: Path, kind: str, obj: dict) -> None:
    """The worker's side: append one {"kind", "data"} line to ``result``, flushed (a kill keeps it)."""
    with open(result, "a") as fh:
        fh.write(json.dumps({"kind": kind, "data": obj}) + "\n")
        fh.flush()
