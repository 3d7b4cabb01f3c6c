"""Which versions are installed, whether they are the lock's, and whether they are supported.

Published numbers are made with exactly ``requirements/lock.txt`` (compiled from ``pyproject.toml`` by ``uv pip
compile --generate-hashes``; install it with ``pip install --require-hashes -r requirements/lock.txt && pip install
--no-deps -e .``). Every results ``meta`` records ``lock_status()``, so a number made off the lock says so.
``OLDEST_SUPPORTED`` are the versions of a GPU image with torch 2.11 / jax 0.11.2 (``requirements/oldest.txt``, CI's
smoke stage): older ones are not tested and ``compare.env`` says so. Pure stdlib: imports neither framework.
"""
from __future__ import annotations

import platform
import re
from importlib import metadata
from pathlib import Path

from contract.peers import packages

LOCK_FILE = Path(__file__).resolve().parents[1] / "requirements" / "lock.txt"
# The packages whose versions every results meta records (``versioned``): these, then each registered peer's
# (``contract.peers``), then the rest.
FRAMEWORK_PACKAGES: tuple[str, ...] = ("numpy", "torch", "jax", "jaxlib", "flax", "optax")
OTHER_PACKAGES: tuple[str, ...] = ("matplotlib", "jax-cuda13-plugin", "jax-cuda12-plugin", "safetensors", "scipy")


def versioned() -> tuple[str, ...]:
    """The packages whose versions every results meta records, peers' included, each once."""
    return tuple(dict.fromkeys((*FRAMEWORK_PACKAGES, *packages(), *OTHER_PACKAGES)))


# A GPU image with torch 2.11 (CUDA 13) / jax 0.11.2: the oldest versions CI tests (requirements/oldest.in).
OLDEST_SUPPORTED: dict[str, str] = {"python": "3.12", "torch": "2.11.0", "jax": "0.11.2", "jaxlib": "0.11.2",
                                    "flax": "0.12.10", "optax": "0.2.8"}

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", re.M)


def normalise(name: str) -> str:
    """PEP 503 name normalisation (``jax_privacy`` == ``jax-privacy``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def installed(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    """{"python": ..., package: installed version or None} for ``versioned()``."""
    return {"python": platform.python_version(), **{pkg: installed(pkg) for pkg in versioned()}}


def read_lock(path: Path = LOCK_FILE) -> dict[str, str]:
    """{normalised name: pinned version} of a pip-style lock (``name==version`` lines)."""
    return {normalise(n): v for n, v in _PIN.findall(path.read_text())}


def _public(version: str) -> str:
    return version.split("+", 1)[0]  # "2.15.0+cpu" is torch 2.15.0 built without CUDA: same code, other build


def lock_status(path: Path = LOCK_FILE) -> dict:
    """Whether the installed packages are the lock's.

    {"lock": path, "matches": bool, "differs": {name: {"installed": v or None, "locked": v}}, "builds": {...}}.
    A local build label (``+cpu``) is not a difference (same release, other build) and is listed in ``builds``.
    ``matches`` is None where the lock file is absent (an installed wheel without the checkout).
    """
    if not path.is_file():
        return {"lock": str(path), "matches": None, "differs": {}, "builds": {}}
    differs, builds = {}, {}
    for name, locked in read_lock(path).items():
        have = installed(name)
        if have is None or _public(have) != locked:
            differs[name] = {"installed": have, "locked": locked}
        elif have != locked:
            builds[name] = have
    return {"lock": str(path), "matches": not differs, "differs": differs, "builds": builds}


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", _public(version))[:4])


def below_oldest() -> dict[str, dict[str, str]]:
    """{package: {"installed": v, "oldest": v}} for each installed package older than ``OLDEST_SUPPORTED``."""
    out = {}
    for pkg, oldest in OLDEST_SUPPORTED.items():
        have = platform.python_version() if pkg == "python" else installed(pkg)
        if have is not None and _key(have) < _key(oldest):
            out[pkg] = {"installed": have, "oldest": oldest}
    return out


def summary(status: dict | None = None) -> str:
    """One line: "lock: matches requirements/lock.txt" or which packages differ."""
    s = lock_status() if status is None else status
    if s["matches"] is None:
        return f"lock: {s['lock']} not found"
    if s["matches"]:
        return "lock: installed packages match requirements/lock.txt" + (
            f" (builds: {', '.join(f'{k} {v}' for k, v in s['builds'].items())})" if s["builds"] else "")
    shown = ", ".join(f"{k} {d['installed']} (lock {d['locked']})" for k, d in list(s["differs"].items())[:6])
    more = len(s["differs"]) - 6
    return f"lock: {len(s['differs'])} packages differ from requirements/lock.txt: {shown}" + (
        f", and {more} more" if more > 0 else "")
