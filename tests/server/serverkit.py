"""Helpers shared by the payload server tests (fixtures are in conftest.py):
known file contents, a payload server running in this process on port 0, and
the real `fireflyhpc serve` as a child process."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

from fireflyhpc.server import runner

GAS_BYTES = bytes(range(256)) * 400  # 102400 bytes, every offset's value is known
SECRET = "not for the web\n"


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
    listener = runner.bind(runner.resolve("127.0.0.1", 0))
    live = LiveServer(listener.host, listener.port, token)

    def recording(environ: dict[str, Any], start_response: Any) -> Any:
        live.remote_ports.append(environ.get("REMOTE_PORT", ""))
        return app(environ, start_response)

    loop = runner.ServerLoop(recording, listener.sock)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()

    def stop() -> None:
        loop.end()
        thread.join(10)
        assert not thread.is_alive()
        loop.close()

    return live, stop


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
