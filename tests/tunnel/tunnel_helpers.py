"""Helpers and fixtures of the tunnel tests: a token-protected HTTP server on node1,
and the real `fireflyhpc tunnel` command run as a subprocess.

A module of its own (not conftest.py) so test files can import it by a name unique
in the whole tree; conftest.py re-exports the fixtures."""

from __future__ import annotations

import http.client
import os
import re
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

HERE = Path(__file__).resolve().parent
SERVER_SCRIPT = HERE / "tunnel_node_server.py"


@dataclass
class NodeServer:
    """One tunnel_node_server.py process on a cluster host."""

    host: str  # the cluster host it runs on
    bind: str  # the address it listens on there
    port: int
    token: str
    proc: subprocess.Popen[str]

    def stop(self) -> None:
        stop_process(self.proc)


def stop_process(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> int:
    """Signal ``proc``, reap it, then kill whatever of its descendants is left.

    Returns its exit status. (A correct tunnel leaves no descendants; tests that
    check that look before calling this.)
    """
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for child in children:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    return proc.returncode


@pytest.fixture(scope="session")
def script_dir() -> Iterator[Path]:
    """A world-readable copy of the node server script (the bench user runs it)."""
    path = Path(tempfile.mkdtemp(prefix="ffhpc-tunnel-tests-"))
    path.chmod(0o755)
    shutil.copy(SERVER_SCRIPT, path / SERVER_SCRIPT.name)
    (path / SERVER_SCRIPT.name).chmod(0o644)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def start_node_server(cluster, script_dir: Path, bind: str, *, host: str = "node1",
                      port: int = 0, user: str | None = None,
                      token: str | None = None) -> NodeServer:
    """Run the HTTP server on ``host`` as ``user`` on ``bind:port``; token via stdin."""
    token = token or secrets.token_hex(16)
    argv = ["ip", "netns", "exec", cluster.netns(host), "runuser", "-u", user or cluster.user,
            "--", "/usr/bin/python3", str(script_dir / SERVER_SCRIPT.name), bind, str(port)]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(token + "\n")
    proc.stdin.close()
    line = read_line(proc, timeout=30)
    match = re.match(r"ready (\d+)", line or "")
    if not match:
        stop_process(proc)
        raise AssertionError(f"node server did not start: {line!r}")
    return NodeServer(host, bind, int(match.group(1)), token, proc)


@pytest.fixture(scope="session")
def loop_server(cluster, script_dir) -> Iterator[NodeServer]:
    """The server on node1's loopback (for the ssh hop)."""
    server = start_node_server(cluster, script_dir, "127.0.0.1")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def addr_server(cluster, script_dir) -> Iterator[NodeServer]:
    """The server on node1's cluster address (for the direct hop)."""
    server = start_node_server(cluster, script_dir, cluster.addr("node1"))
    yield server
    server.stop()


def read_line(proc: subprocess.Popen[str], timeout: float) -> str | None:
    """The first stdout line of ``proc`` within ``timeout`` seconds, or None."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline() if ready else None


@dataclass
class TunnelProc:
    """A running `fireflyhpc tunnel` subprocess and the URL it printed."""

    proc: subprocess.Popen[str]
    url: str
    port: int

    def stop(self) -> int:
        """SIGTERM it; return its exit status."""
        return stop_process(self.proc)

    def stderr(self) -> str:
        assert self.proc.stderr is not None
        return self.proc.stderr.read() if self.proc.poll() is not None else ""


def tunnel_argv(cluster, *args: str, ssh_config: str | None = None,
                ssh: str | None = None) -> list[str]:
    """The command line of `fireflyhpc [--ssh SSH] tunnel ARGS` with the bench's ssh_config
    and its fireflyhpc config (profile ``mini``, the default), never the user's own files."""
    backend = ["--ssh", ssh] if ssh else []
    return [sys.executable, "-m", "fireflyhpc", "-v", "--ssh-config",
            ssh_config or str(cluster.ssh_config), *backend, "--config",
            str(cluster.dir / "fireflyhpc.toml"), "tunnel", *args]


MARK = "FIREFLYHPC_TUNNEL_TEST_MARK"


def run_tunnel(cluster, *args: str, ssh_config: str | None = None, ssh: str | None = None,
               timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """Run the command to completion (for commands expected to fail).

    The result's ``mark`` is in the environment of the command and everything it
    started, so :func:`marked_processes` finds whatever of it is left.
    """
    mark = secrets.token_hex(8)
    done = subprocess.run(tunnel_argv(cluster, *args, ssh_config=ssh_config, ssh=ssh), text=True,
                          capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          env={**os.environ, MARK: mark})
    done.mark = mark  # type: ignore[attr-defined]
    return done


def marked_processes(mark: str) -> list[psutil.Process]:
    """Live processes started (directly or not) by the run that carries ``mark``."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(MARK) == mark and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return found


@pytest.fixture
def start_tunnel(cluster) -> Iterator:
    """Start `fireflyhpc tunnel ARGS`; wait for its URL line; stop it at the end."""
    started: list[TunnelProc] = []

    def start(*args: str, ssh_config: str | None = None, ssh: str | None = None) -> TunnelProc:
        proc = subprocess.Popen(tunnel_argv(cluster, *args, ssh_config=ssh_config, ssh=ssh),
                                text=True,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        line = read_line(proc, timeout=60)
        match = re.match(r"(http://127\.0\.0\.1:(\d+))", line or "")
        if not match:
            stop_process(proc)
            err = proc.stderr.read() if proc.stderr else ""
            raise AssertionError(f"no URL from the tunnel: {line!r} {err}")
        tunnel = TunnelProc(proc, match.group(1), int(match.group(2)))
        started.append(tunnel)
        return tunnel

    yield start
    for tunnel in started:
        tunnel.stop()


def http_get(url: str, path: str, token: str | None, *, timeout: float = 60
             ) -> tuple[int, bytes, dict[str, str]]:
    """GET ``url + path`` with the bearer ``token``: (status, body, headers)."""
    host_port = url.removeprefix("http://")
    conn = http.client.HTTPConnection(host_port, timeout=timeout)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read(), dict(resp.getheaders())
    finally:
        conn.close()


def listening(port: int) -> bool:
    """True if anything listens on TCP ``port`` in this namespace."""
    return any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
               for c in psutil.net_connections(kind="inet"))


def wait_until(predicate, timeout: float, step: float = 0.5) -> bool:
    """Poll ``predicate`` until true or ``timeout``; bounded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())
