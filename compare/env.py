"""``python -m compare.env [--device cuda] [--json]``: what each framework sees, and the settings in force.

For torch and JAX: version, devices, CUDA/cuDNN versions (torch: ``torch.version.cuda``,
``torch.backends.cudnn.version()``; JAX: its CUDA plugin's ``cuda_versions`` where the plugin exposes them),
the installed JAX CUDA plugin distributions, the float32 precision flags (TF32), and the memory settings of the
environment (``compare.env_vars.MEMORY_ENV``: ``XLA_PYTHON_CLIENT_*``, ``PYTORCH_CUDA_ALLOC_CONF``, glibc's
``MALLOC_*``, by name); the peer libraries' versions (``contract.peers``, None where not installed). ``--device cuda`` exits 2 with
one line when either framework cannot see a GPU.

One CUDA stack: JAX's CUDA plugin must be built for the CUDA major version of the torch wheel
(``jax-cuda13-plugin`` beside ``torch.version.cuda == "13.x"``); otherwise pip installs a second, complete CUDA
stack and both ``libcudnn.so.9`` builds meet in any process that imports the two frameworks. ``cuda_stack``
in the report states the check.

``share_gpu_memory()`` is the memory policy of every process that runs JAX on a GPU (the agreement check in
``compare.run``, ``compare.train``, the benchmark points): JAX would otherwise take 75% of the GPU at its first
array and leave torch the rest. Call it before JAX initialises its backend (safest: before ``import jax``).
Neither torch nor jax is imported at module level.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from importlib import metadata

from compare.env_vars import MEMORY_ENV, behaviour_env
from compare.lock import below_oldest, installed, lock_status, summary
from contract.peers import packages
from compare.spec import DeviceError

log = logging.getLogger("compare.env")

# Set (unless the user already set them) in every process that may hold both frameworks on one GPU.
# PREALLOCATE=false: JAX's BFC allocator grows on demand instead of reserving MEM_FRACTION (0.75) of the GPU at
# its first array; it still caps at MEM_FRACTION and keeps what it allocated (no cudaMalloc per call after
# warm-up), as torch's caching allocator does.
SHARED_GPU_ENV: dict[str, str] = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}


def share_gpu_memory(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Set ``SHARED_GPU_ENV`` in ``environ`` (default ``os.environ``) where unset; returns the values in force.

    A value the user set wins (and is what the returned dict, recorded in results' ``meta``, shows). Warns when
    JAX's backend is already initialised in this process, since the setting then no longer applies to it.
    """
    env = os.environ if environ is None else environ
    for key, value in SHARED_GPU_ENV.items():
        env.setdefault(key, value)
    if environ is None and _jax_backend_initialised():
        log.warning("share_gpu_memory() called after JAX initialised its backend: %s applies to new processes only",
                    ", ".join(SHARED_GPU_ENV))
    return memory_settings(env)


def _jax_backend_initialised() -> bool:
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge  # private; only used for this warning

        return bool(getattr(xla_bridge, "_backends", None))
    except Exception:  # noqa: BLE001 - a private API that may move: no warning rather than a crash
        return False


def memory_settings(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The memory-related environment variables in force (name -> value), sorted."""
    return behaviour_env(dict(os.environ if environ is None else environ), MEMORY_ENV)


def torch_report() -> dict:
    import torch

    cuda = torch.cuda.is_available()
    devices = [{"name": torch.cuda.get_device_name(i),
                "capability": ".".join(map(str, torch.cuda.get_device_capability(i))),
                "total_memory_bytes": torch.cuda.get_device_properties(i).total_memory}
               for i in range(torch.cuda.device_count())] if cuda else []
    return {
        "version": torch.__version__,
        "cuda_available": cuda,
        "devices": ["cpu"] + [f"cuda:{i} {d['name']}" for i, d in enumerate(devices)],
        "gpus": devices,
        "cuda_version": torch.version.cuda,  # None: a CPU-only build
        "cudnn_version": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "precision": torch_precision_flags(),
        "threads": torch.get_num_threads(),
    }


def torch_precision_flags() -> dict:
    """The flags that decide whether float32 matmuls/convolutions may run in TF32 on a GPU."""
    import torch

    return {"matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision()}


def _jax_cuda_versions() -> dict:
    """CUDA/cuDNN versions as JAX's CUDA plugin reports them (private module; whatever of it exists)."""
    try:
        from jax._src.lib import cuda_versions
    except Exception:  # noqa: BLE001
        cuda_versions = None
    if cuda_versions is None:
        return {}
    out = {}
    for name in ("cuda_runtime_get_version", "cuda_driver_get_version", "cudnn_get_version",
                 "cublas_get_version", "cuda_compute_capability"):
        fn = getattr(cuda_versions, name, None)
        if fn is None:
            continue
        try:
            out[name.replace("_get_version", "")] = fn() if name != "cuda_compute_capability" else fn(0)
        except Exception as err:  # noqa: BLE001 - e.g. no device: record why
            out[name.replace("_get_version", "")] = f"unavailable ({type(err).__name__})"
    return out


def jax_plugins() -> dict[str, str]:
    """Installed JAX CUDA/ROCm plugin distributions (name -> version), e.g. ``jax-cuda13-plugin``."""
    out = {}
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if re.match(r"jax-(cuda|rocm)\d+-(plugin|pjrt)$", name):
            out[name] = dist.version
    return dict(sorted(out.items()))


def jax_report() -> dict:
    import jax
    import jaxlib

    try:
        gpus = jax.devices("gpu")
        gpu_error = None
    except RuntimeError as err:
        gpus, gpu_error = [], str(err).splitlines()[0]
    return {
        "version": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "plugins": jax_plugins(),
        "default_backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()] + ([] if jax.default_backend() == "gpu" else
                                                       [str(d) for d in gpus]),
        "gpus": [{"name": d.device_kind, "id": d.id} for d in gpus],
        "gpu_error": gpu_error,
        "cuda": _jax_cuda_versions(),
        "precision": {"jax_default_matmul_precision": getattr(jax.config, "jax_default_matmul_precision", None),
                      "per_op": "jax_impl.model.PRECISION = HIGHEST on every dot/conv"},
        "x64": bool(getattr(jax.config, "jax_enable_x64", False)),
    }


def cuda_stack(torch_info: dict, jax_info: dict) -> dict:
    """The one-stack rule: every JAX CUDA plugin's major == torch's CUDA major. ``ok`` None: nothing to check."""
    torch_major = torch_info["cuda_version"].split(".")[0] if torch_info.get("cuda_version") else None
    majors = sorted({m.group(1) for name in jax_info.get("plugins", {})
                     if (m := re.match(r"jax-cuda(\d+)-", name))})
    if torch_major is None or not majors:
        ok, note = None, "not applicable: " + ("torch is a CPU build" if torch_major is None else
                                               "no JAX CUDA plugin installed")
    else:
        ok = majors == [torch_major]
        note = (f"one CUDA {torch_major} stack" if ok else
                f"MISMATCH: torch CUDA {torch_major}, JAX plugin(s) CUDA {', '.join(majors)}: two CUDA stacks; "
                f'install jax[cuda{torch_major}]')
    return {"ok": ok, "torch_cuda_major": torch_major, "jax_plugin_majors": majors, "note": note,
            "nvidia_packages": _nvidia_packages()}


def _nvidia_packages() -> dict[str, str]:
    out = {}
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name.startswith("nvidia-"):
            out[name] = dist.version
    return dict(sorted(out.items()))


def report() -> dict:
    """The whole report (imports both frameworks; JAX after ``share_gpu_memory``)."""
    settings = share_gpu_memory()
    t, j = torch_report(), jax_report()
    return {"python": sys.version.split()[0], "executable": sys.executable, "torch": t, "jax": j,
            "cuda_stack": cuda_stack(t, j), "memory_settings": settings, "lock": lock_status(),
            "below_oldest_supported": below_oldest(), "peers": {pkg: installed(pkg) for pkg in packages()}}


def _torch_problem(t: dict) -> str | None:
    if t["cuda_available"]:
        return None
    build = "a CPU-only build" if t["cuda_version"] is None else f"built for CUDA {t['cuda_version']}"
    return f"torch {t['version']} sees no CUDA device ({build})"


def _jax_problem(j: dict) -> str | None:
    if j["gpus"]:
        return None
    hint = ("no JAX CUDA plugin installed: pip install -e '.[cuda]'" if not j["plugins"] else
            f"plugins {', '.join(j['plugins'])} found no GPU")
    return f"JAX {j['version']} sees no GPU ({hint})"


def gpu_problems(rep: dict) -> list[str]:
    """Why ``--device cuda`` cannot run here, one phrase per framework; empty when both see a GPU."""
    return [p for p in (_torch_problem(rep["torch"]), _jax_problem(rep["jax"])) if p]


def require_gpu(frameworks: tuple[str, ...] = ("torch", "jax")) -> None:
    """Raise ``compare.spec.DeviceError`` (one line naming each framework's problem) unless each of ``frameworks`` sees a
    GPU. Imports only the frameworks named; JAX after ``share_gpu_memory``."""
    share_gpu_memory()
    checks = {"torch": lambda: _torch_problem(torch_report()), "jax": lambda: _jax_problem(jax_report())}
    problems = [p for fw in frameworks if (p := checks[fw]())]
    if problems:
        raise DeviceError("--device cuda: " + "; ".join(problems))


def format_report(rep: dict) -> str:
    t, j, s = rep["torch"], rep["jax"], rep["cuda_stack"]
    lines = [
        f"python   {rep['python']} ({rep['executable']})",
        f"torch    {t['version']}  CUDA {t['cuda_version']}  cuDNN {t['cudnn_version']}  threads {t['threads']}",
        f"         devices: {', '.join(t['devices'])}",
        "         precision: " + ", ".join(f"{k}={v}" for k, v in t["precision"].items()),
        f"jax      {j['version']}  jaxlib {j['jaxlib']}  default backend {j['default_backend']}  x64 {j['x64']}",
        "         plugins: " + (", ".join(f"{k} {v}" for k, v in j["plugins"].items()) or "none"),
        f"         devices: {', '.join(j['devices'])}" + (f"  (gpu: {j['gpu_error']})" if j["gpu_error"] else ""),
        "         cuda: " + (", ".join(f"{k} {v}" for k, v in j["cuda"].items()) or "not reported (no CUDA plugin)"),
        f"         precision: default_matmul_precision={j['precision']['jax_default_matmul_precision']}, "
        f"{j['precision']['per_op']}",
        f"stack    {s['note']}",
        "memory   " + (" ".join(f"{k}={v}" for k, v in rep["memory_settings"].items()) or "(none set)"),
        "peers    " + (", ".join(f"{k} {v or 'not installed'}" for k, v in rep.get("peers", {}).items()) or "none"),
        summary(rep["lock"]),
    ]
    if rep["below_oldest_supported"]:
        lines.append("support: older than the oldest supported (untested): " + ", ".join(
            f"{k} {v['installed']} < {v['oldest']}" for k, v in rep["below_oldest_supported"].items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m compare.env", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cuda: exit 2 with one line unless both frameworks see a GPU")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    rep = report()
    print(json.dumps(rep, indent=1, default=str) if a.json else format_report(rep))
    problems = gpu_problems(rep) if a.device == "cuda" else []
    if problems:
        print("compare.env: --device cuda: " + "; ".join(problems), file=sys.stderr)
        return 2
    if rep["cuda_stack"]["ok"] is False:
        print(f"compare.env: {rep['cuda_stack']['note']}", file=sys.stderr)
        return 3 if a.device == "cuda" else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
