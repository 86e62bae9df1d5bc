"""The error families: every failure raised on purpose has its own documented status."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import fireflyhpc
from fireflyhpc.errors import ExitStatus, FireflyHPCError

PACKAGE = Path(fireflyhpc.__file__).resolve().parent
README = PACKAGE.parent / "README.md"


def _root_class_uses(path: Path) -> list[int]:
    """Lines of ``path`` that build the root class itself (``FireflyHPCError(...)``)."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else \
                func.attr if isinstance(func, ast.Attribute) else None
            if name == FireflyHPCError.__name__:
                lines.append(node.lineno)
        elif isinstance(node, ast.Raise) and isinstance(node.exc, (ast.Name, ast.Attribute)):
            name = node.exc.id if isinstance(node.exc, ast.Name) else node.exc.attr
            if name == FireflyHPCError.__name__:
                lines.append(node.lineno)
    return sorted(lines)


def test_the_root_class_is_never_raised_directly() -> None:
    # Its status is 1, which the README reserves for bugs: raise a family instead.
    found = [f"{path.relative_to(PACKAGE.parent)}:{line}"
             for path in sorted(PACKAGE.rglob("*.py")) if path.name != "errors.py"
             for line in _root_class_uses(path)]
    assert found == []


def test_the_check_sees_a_direct_raise(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("from fireflyhpc import errors\n"
                      "def f():\n    raise errors.FireflyHPCError('x')\n"
                      "def g():\n    raise FireflyHPCError\n"
                      "def h():\n    raise ConfigError('fine')\n")
    assert _root_class_uses(sample) == [3, 5]


def test_every_status_is_in_the_readme_table() -> None:
    section = README.read_text(encoding="utf-8").split("\n## Exit status\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    documented = {int(m) for m in re.findall(r"^\| (\d+) \|", section, re.MULTILINE)}
    assert documented == {int(status) for status in ExitStatus}
