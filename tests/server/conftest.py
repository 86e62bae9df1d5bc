"""Fixtures for the payload server tests: a small dataset, a private registry,
an in-process waitress server on port 0, and the real `fireflyhpc serve`."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from fireflyhpc.datasets import discover
from fireflyhpc.server import runner
from fireflyhpc.server.app import create_app
from fireflyhpc.server.viewers import CUSTOM, WebApp

GAS_BYTES = bytes(range(256)) * 400  # 102400 bytes, every offset's value is known
SECRET = "not for the web\n"


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


@dataclass
class LiveServer:
    """A server running in this process; ``remote_ports`` lists the client port
    of every request the server handled (one entry per request)."""

    host: str
    port: int
    token: str | None
    remote_ports: list[str] = field(default_factory=list)

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=30)

    def request(self, path: str, headers: dict[str, str] | None = None, *, auth: bool = True,
                method: str = "GET") -> tuple[http.client.HTTPResponse, bytes]:
        """One request on a fresh connection; the path is sent exactly as given."""
        all_headers = dict(headers or {})
        if auth and self.token:
            all_headers.setdefault("Authorization", f"Bearer {self.token}")
        conn = self.connection()
        try:
            conn.request(method, path, headers=all_headers)
            response = conn.getresponse()
            return response, response.read()
        finally:
            conn.close()


def start_in_process(app: Any, token: str | None) -> tuple[LiveServer, Callable[[], None]]:
    import waitress

    listener = runner.bind(runner.resolve("127.0.0.1", 0))
    live = LiveServer(listener.host, listener.port, token)

    def recording(environ: dict[str, Any], start_response: Any) -> Any:
        live.remote_ports.append(environ.get("REMOTE_PORT", ""))
        return app(environ, start_response)

    server = waitress.create_server(recording, sockets=[listener.sock],
                                    **runner.WAITRESS_SETTINGS)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()

    def stop() -> None:
        # End the loop from inside its own thread (an empty map ends it), then
        # close every socket it held.
        dispatchers = list(server._map.values())
        server.trigger.pull_trigger(server._map.clear)
        thread.join(10)
        assert not thread.is_alive()
        for dispatcher in dispatchers:
            dispatcher.close()
        server.task_dispatcher.shutdown()

    return live, stop


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


@dataclass
class ServeProcess:
    """A running `fireflyhpc serve` child."""

    process: subprocess.Popen[str]
    url: str
    ready_file: Path

    @property
    def token(self) -> str:
        return self.url.split("?token=", 1)[1]

    @property
    def base(self) -> str:
        return self.url.split("?", 1)[0]


def start_serve(args: list[str], tmp_path: Path, env: dict[str, str] | None = None,
                timeout: float = 60.0) -> ServeProcess:
    """Start `python -m fireflyhpc serve ARGS --no-browser --ready-file F`; wait
    for its URL line. Fails the test (after killing it) if none comes."""
    ready = tmp_path / f"ready-{time.monotonic_ns()}.json"
    argv = [sys.executable, "-m", "fireflyhpc", "serve", *args, "--no-browser",
            "--ready-file", str(ready)]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, **(env or {})))
    line = _read_line(process, timeout)
    if not line.startswith("http://"):
        process.kill()
        _, err = process.communicate(timeout=30)
        pytest.fail(f"serve printed {line!r}; stderr: {err}")
    return ServeProcess(process, line.strip(), ready)


def _read_line(process: subprocess.Popen[str], timeout: float) -> str:
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(process.stdout.readline()),  # type: ignore[union-attr]
                              daemon=True)
    reader.start()
    reader.join(timeout)
    return result[0] if result else ""


def stop_serve(serve: ServeProcess, sig: int = signal.SIGTERM) -> int:
    """Signal the child and return its exit status (killing it if it hangs)."""
    if serve.process.poll() is None:
        serve.process.send_signal(sig)
    try:
        return serve.process.wait(30)
    except subprocess.TimeoutExpired:
        serve.process.kill()
        serve.process.wait(30)
        raise


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
