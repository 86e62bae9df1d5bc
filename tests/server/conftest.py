"""Fixtures for the payload server tests: a small dataset, a private registry,
an in-process waitress server on port 0, and the real `fireflyhpc serve`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest
from serverkit import (GAS_BYTES, SECRET, LiveServer, ServeProcess, start_in_process,
                       start_serve, stop_serve)

from fireflyhpc.datasets import discover
from fireflyhpc.server.app import create_app
from fireflyhpc.server.viewers import CUSTOM, WebApp


@pytest.fixture(autouse=True)
def private_registry(tmp_path_factory: pytest.TempPathFactory,
                     monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own registry directory (children inherit it)."""
    path = tmp_path_factory.mktemp("registry")
    monkeypatch.setenv("FIREFLYHPC_RUNTIME_DIR", str(path))
    monkeypatch.delenv("FIREFLYHPC_TOKEN", raising=False)
    return path


@pytest.fixture
def data_tree(tmp_path: Path) -> Path:
    """tmp/sims/galaxy (a dataset), tmp/secret.txt outside it, and traps:
    a symlink pointing out, a hidden file, a symlink pointing inside."""
    sims = tmp_path / "sims"
    galaxy = sims / "galaxy"
    galaxy.mkdir(parents=True)
    (galaxy / "Gas000.ffly").write_bytes(GAS_BYTES)
    (galaxy / "Settings.json").write_text('{"loaded": true}\n')
    manifest = {"Gas": [["galaxy/Gas000.ffly", 10]], "options": [["galaxy/Settings.json", 0]]}
    (galaxy / "filenames.json").write_text(json.dumps(manifest))
    (galaxy / "notes.txt").write_text("hello\n")
    (galaxy / ".hidden").write_text(SECRET)
    (tmp_path / "secret.txt").write_text(SECRET)
    (galaxy / "escape").symlink_to(tmp_path / "secret.txt")
    (galaxy / "escape_dir").symlink_to(tmp_path)
    (galaxy / "inside.ffly").symlink_to(galaxy / "Gas000.ffly")
    (sims / "stray.txt").write_text(SECRET)  # in the DATA_DIR but not in a dataset
    return sims


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    """A minimal web app (served with --app PATH)."""
    root = tmp_path / "webapp"
    root.mkdir()
    (root / "index.html").write_text("<!doctype html><title>test app</title>"
                                     "<script src='./app.js'></script>\n")
    (root / "app.js").write_text("console.log('app');\n")
    return root


@pytest.fixture
def live_server(data_tree: Path, app_dir: Path) -> Iterator[LiveServer]:
    """The payload app (custom web app + data_tree) on waitress in a thread."""
    token = "test-token-" + "x" * 20
    app = create_app(WebApp(CUSTOM, str(app_dir.resolve())), discover([data_tree]), token)
    live, stop = start_in_process(app, token)
    try:
        yield live
    finally:
        stop()


@pytest.fixture
def serve_process(data_tree: Path, app_dir: Path, tmp_path: Path) -> Iterator[ServeProcess]:
    """The real `fireflyhpc serve DATA --app PATH` as a child process."""
    serve = start_serve([str(data_tree), "--app", str(app_dir)], tmp_path)
    try:
        yield serve
    finally:
        stop_serve(serve)
        serve.process.communicate(timeout=30)


@pytest.fixture(params=["thread", "process"])
def any_server(request: pytest.FixtureRequest) -> LiveServer:
    """The same app, in process (waitress on a thread) and as `fireflyhpc serve`."""
    if request.param == "thread":
        return request.getfixturevalue("live_server")  # type: ignore[no-any-return]
    serve: ServeProcess = request.getfixturevalue("serve_process")
    host, port = serve.base.split("//", 1)[1].rstrip("/").rsplit(":", 1)
    return LiveServer(host, int(port), serve.token)
