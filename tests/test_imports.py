"""The layering, read from the source: ``contract`` at the bottom, the two sides on it, the harness on top.

- ``contract`` imports no side, no harness module and no framework (numpy and the standard library only);
- a side imports ``contract``, its own package and its own framework, never the other side or the harness;
- the harness (``compare``) imports no side module: it reaches a side through ``compare.frameworks.side``, whose
  module names are strings (``<pkg>.api``);
- no import cycle among the packages;
- each side's ``api`` module provides every member of ``contract.interface.FrameworkSide``;
- the experiments under ``scripts/`` reach a side only through its interface, as the harness does (no side module,
  no ``compare.frameworks.impl_module`` / ``per_sample_module``, which hand out a side's internals to tests).
Every import counts, top-level or inside a function.
"""
from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from contract import interface

ROOT = Path(__file__).resolve().parents[1]
SIDES = ("torch_impl", "jax_impl")
FRAMEWORK_ROOTS = {"torch_impl": {"torch", "opacus"}, "jax_impl": {"jax", "jaxlib", "flax", "optax", "jax_privacy"}}
ALL_FRAMEWORKS = set().union(*FRAMEWORK_ROOTS.values())


def imports(path: Path) -> list[str]:
    """Every module name imported by ``path`` (absolute imports; relative ones resolved to their package)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                pkg = path.relative_to(ROOT).parent.parts[: len(path.relative_to(ROOT).parent.parts) - node.level + 1]
                names.append(".".join((*pkg, node.module or "")).strip("."))
            else:
                names.append(node.module or "")
    return names


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def roots(path: Path) -> set[str]:
    return {name.split(".")[0] for name in imports(path)}


def test_the_packages_exist():
    for package in ("contract", "compare", *SIDES):
        assert sources(package), package


@pytest.mark.parametrize("path", sources("contract"), ids=lambda p: str(p.relative_to(ROOT)))
def test_contract_imports_no_side_no_harness_no_framework(path: Path):
    bad = roots(path) & {"compare", *SIDES, *ALL_FRAMEWORKS}
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize("package", SIDES)
def test_a_side_imports_only_the_contract_itself_and_its_framework(package: str):
    other = next(s for s in SIDES if s != package)
    foreign = {"compare", other} | (ALL_FRAMEWORKS - FRAMEWORK_ROOTS[package])
    bad = {str(p.relative_to(ROOT)): sorted(roots(p) & foreign) for p in sources(package) if roots(p) & foreign}
    assert not bad, f"{package} reaches outside its layer: {bad}"


INTERNALS = {"impl_module", "per_sample_module"}


def internals_used(path: Path) -> set[str]:
    """Side modules ``path`` imports, and the names of ``INTERNALS`` it imports or reads as an attribute."""
    tree = ast.parse(path.read_text(), str(path))
    used = roots(path) & set(SIDES)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            used |= {a.name for a in node.names} & INTERNALS
        elif isinstance(node, ast.Attribute) and node.attr in INTERNALS:
            used.add(node.attr)
    return used


@pytest.mark.parametrize("path", sources("scripts"), ids=lambda p: str(p.relative_to(ROOT)))
def test_a_script_uses_only_the_side_interface(path: Path):
    bad = internals_used(path)
    assert not bad, f"{path.relative_to(ROOT)} uses {sorted(bad)}: reach a side through compare.frameworks.side"


def test_a_script_reaching_inside_a_side_is_seen(tmp_path: Path):
    bad = tmp_path / "bad.py"
    bad.write_text("import compare.frameworks as f\nf.impl_module('jax', 'rules')\n"
                   "def g():\n    from jax_impl.rules import linear\n")
    assert internals_used(bad) == {"impl_module", "jax_impl"}


@pytest.mark.parametrize("path", sources("compare"), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_harness_imports_no_side(path: Path):
    bad = roots(path) & set(SIDES)
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}: reach a side through compare.frameworks.side"


def test_no_import_cycle_between_packages():
    layer = {"contract": 0, "torch_impl": 1, "jax_impl": 1, "compare": 2}
    for package, level in layer.items():
        for path in sources(package):
            for name in roots(path) & set(layer):
                assert layer[name] <= level, f"{path.relative_to(ROOT)} (layer {level}) imports {name}"


def test_a_violation_is_seen(tmp_path: Path):
    """The reader itself: a side module that imports the harness inside a function is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from compare.spec import MODELS\n    import torch_impl.dp\n")
    assert {"compare", "torch_impl"} <= roots(bad)


def _members() -> list[str]:
    return [n for n in dir(interface.FrameworkSide) if not n.startswith("_")] + list(
        interface.FrameworkSide.__annotations__)


@pytest.mark.parametrize("framework", ("torch", "jax"))
def test_each_side_provides_the_interface(framework: str):
    from compare.frameworks import side

    api = side(framework)
    missing = [n for n in _members() if not hasattr(api, n)]
    assert not missing, f"{framework} side lacks {missing}"
    for name in _members():
        member = getattr(interface.FrameworkSide, name, None)
        if not callable(member):
            continue
        wanted = [p for p in inspect.signature(member).parameters.values() if p.name != "self"]
        got = inspect.signature(getattr(api, name)).parameters
        required = [p.name for p in wanted if p.default is inspect.Parameter.empty
                    and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        params = list(got)
        assert params[: len(required)] == required, f"{framework}.{name}{tuple(got)} vs the interface {required}"


def test_the_interface_names_exactly_the_exports():
    assert set(interface.EXPORTS) == {n for n in _members()}


@pytest.mark.parametrize("package", SIDES)
def test_no_rule_and_no_layer_imports_a_workload(package: str):
    """A kind's rules and the shared layer classes import no workload module (``<side>.models``): a layer that
    several workloads use lives in ``<side>.layers``, which rules and workloads both import."""
    files = [*sources(f"{package}/rules"), ROOT / package / "layers.py"]
    bad = {str(p.relative_to(ROOT)): [n for n in imports(p) if n.startswith(f"{package}.models")]
           for p in files}
    assert not {k: v for k, v in bad.items() if v}, f"{package} rules import workloads: {bad}"
