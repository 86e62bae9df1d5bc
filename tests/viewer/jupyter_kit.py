"""A real Jupyter server (jupyter-server, with or without jupyter-server-proxy) on
loopback for the notebook tests, and a real kernel under it that runs code and
hands back what a notebook page would display."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Jupyter:
    """A running jupyter-server: its URL, token, runtime and static folders."""

    process: subprocess.Popen[bytes]
    url: str
    port: int
    token: str
    runtime: Path
    static: Path

    def api(self, method: str, path: str) -> Any:
        request = urllib.request.Request(self.url + path, method=method, data=b"{}" if
                                         method == "POST" else None,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.load(response)

    @contextlib.contextmanager
    def kernel(self, timeout: float = 120) -> Iterator["Kernel"]:
        """A kernel started through the REST API (as a notebook page would), shut
        down through it afterwards."""
        from jupyter_client import BlockingKernelClient

        kernel_id = self.api("POST", "api/kernels")["id"]
        client = BlockingKernelClient(connection_file=str(self.runtime /
                                                          f"kernel-{kernel_id}.json"))
        try:
            client.load_connection_file()
            client.start_channels()
            deadline = time.monotonic() + timeout
            while True:
                try:
                    client.wait_for_ready(timeout=max(1.0, deadline - time.monotonic()))
                    break
                except RuntimeError:
                    # A kernel still importing (its heartbeat not answered yet)
                    # looks dead to the client: ask again until the deadline.
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
            yield Kernel(client, timeout)
        finally:
            client.stop_channels()
            self.api_delete(f"api/kernels/{kernel_id}")

    def api_delete(self, path: str) -> None:
        request = urllib.request.Request(self.url + path, method="DELETE",
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=60):
            pass

    def page(self, name: str, cell_html: str) -> str:
        """A notebook-like page with one output cell, on the Jupyter server's own
        origin (its static files); returns its URL."""
        (self.static / name).write_text(
            "<!doctype html><html><head><meta charset='utf-8'><title>notebook</title></head>"
            f"<body style='margin:0;background:#fff'>{cell_html}</body></html>")
        return f"{self.url}static/{name}"


@dataclass
class Kernel:
    """A kernel under the Jupyter server; :meth:`run` executes a cell."""

    client: Any
    timeout: float

    def run(self, code: str) -> dict[str, list[str]]:
        """Run ``code``; its outputs by kind: ``html`` (display_data and
        execute_result text/html, in order), ``stdout``, ``stderr``, ``error``."""
        out: dict[str, list[str]] = {"html": [], "stdout": [], "stderr": [], "error": []}

        def hook(message: dict[str, Any]) -> None:
            kind, content = message["msg_type"], message["content"]
            if kind in ("display_data", "execute_result") and "text/html" in content["data"]:
                out["html"].append(content["data"]["text/html"])
            elif kind == "stream":
                out[content["name"]].append(content["text"])
            elif kind == "error":
                out["error"].append("\n".join(content["traceback"]))

        self.client.execute_interactive(code, timeout=self.timeout, output_hook=hook)
        assert not out["error"], out["error"]
        return out


def start_jupyter(base: Path, *, proxy: bool, env: dict[str, str] | None = None,
                  timeout: float = 90) -> Jupyter:
    """Start jupyter-server on 127.0.0.1 (any port) with its own runtime folder;
    jupyter-server-proxy enabled or not. Skips if jupyter-server is missing (fails
    under CI=true)."""
    for module in ("jupyter_server", "jupyter_server_proxy", "ipykernel", "jupyter_client"):
        try:
            __import__(module)
        except ImportError:
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(f"CI=true but {module} is not installed (tests/install-deps)")
            pytest.skip(f"{module} is not installed")
    runtime, static, root = base / "runtime", base / "static", base / "root"
    for folder in (runtime, static, root):
        folder.mkdir(parents=True)
    config = base / "jupyter_server_config.json"
    config.write_text(json.dumps({"ServerApp": {
        "jpserver_extensions": {"jupyter_server_proxy": proxy},
        "extra_static_paths": [str(static)], "root_dir": str(root),
        "open_browser": False, "ip": "127.0.0.1", "port": 0, "port_retries": 0}}))
    token = os.urandom(16).hex()
    argv = [sys.executable, "-m", "jupyter_server", f"--config={config}",
            f"--IdentityProvider.token={token}"]
    if os.geteuid() == 0:
        argv.append("--allow-root")
    environment = {**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime),
                   "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                               os.environ.get("PYTHONPATH")])),
                   **(env or {})}
    with open(base / "jupyter.log", "wb") as log:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                   env=environment, start_new_session=True)
    info_file = runtime / f"jpserver-{process.pid}.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if info_file.exists():
            try:
                info = json.loads(info_file.read_text())
            except ValueError:
                continue
            return Jupyter(process, info["url"], info["port"], token, runtime, static)
        time.sleep(0.2)
    stop_jupyter(process)
    pytest.fail(f"jupyter-server did not start: {(base / 'jupyter.log').read_text()[-2000:]}")


def stop_jupyter(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (jupyter-server then ends its kernels), SIGKILL the group if it hangs."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # kernels or servers it left
    except ProcessLookupError:
        pass
    process.wait(10)
