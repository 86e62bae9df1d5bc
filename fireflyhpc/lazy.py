"""Names a package exports but loads on first use (PEP 562's module ``__getattr__``),
so that importing the package stays light: the CLI's start, the OpenSSH backend
without paramiko, a session whose login starts before its heavier modules load."""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Mapping


def lazy_exports(package: str, homes: Mapping[str, str]) -> Callable[[str], Any]:
    """The ``__getattr__`` of ``package``: ``homes`` names, for each exported name, the
    module below ``package`` it comes from. The first use imports it and keeps the
    value on the package, so the lookup happens once."""

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{home}"), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__


__all__ = ["lazy_exports"]
