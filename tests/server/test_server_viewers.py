"""Which web app `--app` picks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fireflyhpc.errors import ConfigError
from fireflyhpc.server.viewers import BUILTIN, CUSTOM, FIREFLY, builtin_app_dir, choose_app


def test_explicit_choices(app_dir: Path) -> None:
    assert choose_app("firefly").kind == FIREFLY
    builtin = choose_app("builtin")
    assert builtin.kind == BUILTIN and (Path(builtin.root) / "index.html").is_file()
    assert choose_app(str(app_dir)) == choose_app(str(app_dir) + "/")
    assert choose_app(str(app_dir)).kind == CUSTOM


def test_auto_falls_back_to_the_bundled_viewer_without_firefly(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "firefly", None)  # "import firefly" now fails
    assert choose_app("auto").kind == BUILTIN
    assert choose_app("auto").root == builtin_app_dir()
    with pytest.raises(ConfigError, match="firefly package is not installed"):
        choose_app("firefly")


@pytest.mark.parametrize("value", ["nonsense", "/nonexistent/dir"])
def test_bad_app_values(value: str) -> None:
    with pytest.raises(ConfigError, match="containing index.html"):
        choose_app(value)


def test_serve_help_lists_every_option() -> None:
    proc = subprocess.run([sys.executable, "-m", "fireflyhpc", "serve", "--help"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for option in ("--port", "--host", "--demo", "--no-browser", "--token-file", "--no-token",
                   "--ready-file", "--app"):
        assert option in proc.stdout
