"""The declared dependencies match the imports: every third-party module fireflyhpc
imports is declared in pyproject.toml, and every declared runtime dependency is
imported (or is listed below with the reason it is needed without an import).
The benchmarks' third-party imports are declared too, in the runtime list or the
``bench`` extra."""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import sys
from pathlib import Path
from typing import Mapping

import pytest
from packaging.requirements import Requirement

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 only
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent

# Declared runtime dependencies that fireflyhpc's own code never imports, and why.
NEEDED_WITHOUT_IMPORT = {
    # paramiko's SSHConfig evaluates `Match exec` by running the command through
    # invoke; paramiko 3.x installs invoke only with its [invoke] extra.
    "invoke": "paramiko's ssh_config `Match exec`",
}


def norm(name: str) -> str:
    """A distribution name in its normalized form (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def declared(requirements: list[str]) -> set[str]:
    return {norm(Requirement(line).name) for line in requirements}


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError")
               for n in names)


def third_party_imports(folder: Path, local: set[str]) -> dict[str, set[str]]:
    """Top-level modules imported by the files under ``folder`` that are neither the
    standard library nor ``local``: module -> the files importing it. Imports inside a
    ``try`` that catches ImportError are optional, and left out."""
    found: dict[str, set[str]] = {}
    for path in sorted(folder.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        optional: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Try) and any(_catches_import_error(h) for h in node.handlers):
                optional.update(id(inner) for stmt in node.body for inner in ast.walk(stmt))
        for node in ast.walk(tree):
            if id(node) in optional:
                continue
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top not in sys.stdlib_module_names and top not in local:
                    found.setdefault(top, set()).add(str(path.relative_to(folder)))
    return found


@functools.lru_cache(maxsize=1)
def _installed() -> Mapping[str, list[str]]:
    return importlib.metadata.packages_distributions()


def distributions_of(module: str) -> set[str]:
    """The installed distributions that provide ``module``, plus its own name (a
    dependency that only applies to another Python version may not be installed)."""
    return {norm(d) for d in _installed().get(module, [])} | {norm(module)}


def undeclared(imports: dict[str, set[str]], names: set[str]) -> dict[str, set[str]]:
    return {module: files for module, files in imports.items()
            if not distributions_of(module) & names}


def test_every_third_party_import_is_declared() -> None:
    runtime = declared(project()["dependencies"])
    imports = third_party_imports(ROOT / "fireflyhpc", {"fireflyhpc"})
    assert imports, "the scan found no imports at all"
    assert undeclared(imports, runtime) == {}


def test_every_declared_runtime_dependency_is_imported() -> None:
    imports = third_party_imports(ROOT / "fireflyhpc", {"fireflyhpc"})
    provided = {dist for module in imports for dist in distributions_of(module)}
    unused = declared(project()["dependencies"]) - provided - set(NEEDED_WITHOUT_IMPORT)
    assert unused == set(), "declared but imported nowhere in fireflyhpc/"


def test_a_dependency_needed_without_an_import_is_declared_and_not_imported() -> None:
    runtime = declared(project()["dependencies"])
    imports = third_party_imports(ROOT / "fireflyhpc", {"fireflyhpc"})
    for name in NEEDED_WITHOUT_IMPORT:
        assert name in runtime, name
        assert name not in imports, f"{name} is imported now: drop it from the list"


def test_benchmark_imports_are_declared_in_the_bench_extra() -> None:
    spec = project()
    allowed = declared(spec["dependencies"]) | declared(spec["optional-dependencies"]["bench"])
    # the benchmarks' own modules, and the test helpers they reuse (the Chromium driver)
    local = {path.stem for path in (ROOT / "benchmarks").glob("*.py")} | {"fireflyhpc"} | \
        {path.stem for path in (ROOT / "tests").rglob("*.py")}
    imports = third_party_imports(ROOT / "benchmarks", local)
    assert undeclared(imports, allowed) == {}
    assert "sshtunnel" in imports and "sshtunnel" not in declared(spec["dependencies"])


@pytest.mark.parametrize("source, expected", [
    ("import yaml\nfrom flask import Flask\nimport os\n", {"yaml", "flask"}),
    ("def f():\n    import paramiko.config\n", {"paramiko"}),
    ("try:\n    import IPython\nexcept ImportError:\n    pass\n", set()),
    ("try:\n    import psutil\nexcept OSError:\n    pass\n", {"psutil"}),
    ("from . import sibling\nfrom mypkg.sub import x\n", set()),
])
def test_the_import_scan(tmp_path: Path, source: str, expected: set[str]) -> None:
    (tmp_path / "m.py").write_text(source)
    assert set(third_party_imports(tmp_path, {"mypkg"})) == expected


def test_distribution_names_map_to_import_names() -> None:
    """Import names are looked up through the installed distributions' files."""
    assert distributions_of("yaml") >= {"pyyaml", "yaml"}  # PyYAML provides yaml
    assert distributions_of("websocket") >= {"websocket-client"}
    assert norm("PyYAML") == "pyyaml" and norm("Flask_Login.x") == "flask-login-x"
