"""Faults on the mini cluster: the same local URL keeps working without a restart."""

from __future__ import annotations

import sys
import threading
import time

import psutil
import pytest
from tunnel_helpers import http_get, start_node_server, wait_until

pytestmark = pytest.mark.cluster

OUTAGE = 20.0


def ok(url: str, token: str, timeout: float = 20) -> bool:
    try:
        return http_get(url, "/hello", token, timeout=timeout)[0] == 200
    except OSError:
        return False


def session_ports(pid: int, login_addr: str) -> set[int]:
    """Local ports of the SSH connections to the login node held by ``pid``'s tree."""
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    ports = set()
    for proc in procs:
        try:
            for conn in proc.net_connections(kind="tcp"):
                if conn.raddr and conn.raddr.ip == login_addr and conn.raddr.port == 22:
                    ports.add(conn.laddr.port)
        except psutil.NoSuchProcess:
            pass
    return ports


KILL_SESSION = """
import os, signal, sys, psutil
ports = {int(p) for p in sys.argv[1:]}
pids = {c.pid for c in psutil.net_connections(kind="tcp")
        if c.pid and c.laddr.port == 22 and c.raddr and c.raddr.port in ports}
for pid in pids:
    print(pid, psutil.Process(pid).name(), psutil.Process(pid).username())
    os.kill(pid, signal.SIGKILL)
"""


@pytest.mark.parametrize("backend", ["openssh", "paramiko"])
def test_killed_sshd_session_comes_back(cluster, start_tunnel, loop_server, backend) -> None:
    tunnel = start_tunnel("node1", str(loop_server.port), "--login", cluster.login_host,
                          ssh=backend)
    assert ok(tunnel.url, loop_server.token)
    ports = session_ports(tunnel.proc.pid, cluster.login_addr)
    assert ports, "the tunnel holds an SSH connection to the login node"
    killed = cluster.run_in(cluster.login_host, [sys.executable, "-c", KILL_SESSION,
                                                 *map(str, ports)])
    assert "sshd" in killed.stdout, killed.stdout + killed.stderr
    # The same URL works again, without restarting the command.
    assert wait_until(lambda: ok(tunnel.url, loop_server.token), timeout=90, step=1)
    assert tunnel.proc.poll() is None
    assert session_ports(tunnel.proc.pid, cluster.login_addr).isdisjoint(ports)


@pytest.mark.cluster_fault
def test_link_down_for_20_s_then_up(cluster, start_tunnel, loop_server) -> None:
    tunnel = start_tunnel("node1", str(loop_server.port), "--login", cluster.login_host)
    assert ok(tunnel.url, loop_server.token)
    during: list[bool] = []
    with cluster.link_down():
        time.sleep(2)
        # A browser connection made during the outage waits for the path to come back.
        waiting = threading.Thread(target=lambda: during.append(
            ok(tunnel.url, loop_server.token, timeout=150)))
        waiting.start()
        time.sleep(OUTAGE - 2)
    waiting.join(timeout=180)
    assert during == [True], "the request made during the outage must be served after it"
    assert wait_until(lambda: ok(tunnel.url, loop_server.token), timeout=90, step=1)
    assert tunnel.proc.poll() is None, "the command must not exit"


@pytest.mark.parametrize("backend", ["openssh", "paramiko"])
def test_remote_server_gone_gives_clear_answers(cluster, start_tunnel, script_dir,
                                                backend) -> None:
    server = start_node_server(cluster, script_dir, "127.0.0.1")
    try:
        tunnel = start_tunnel("node1", str(server.port), "--login", cluster.login_host,
                              ssh=backend)
        assert ok(tunnel.url, server.token)
        server.stop()
        for _ in range(2):  # every request gets its own answer; the tunnel stays up
            status, body, headers = http_get(tunnel.url, "/hello", server.token)
            assert status == 502
            assert f"node1:{server.port}" in body.decode()
            assert "refused" in headers["X-Fireflyhpc-Error"].lower()
        assert tunnel.proc.poll() is None
        server = start_node_server(cluster, script_dir, "127.0.0.1", port=server.port,
                                   token=server.token)
        assert ok(tunnel.url, server.token), "the server is back: so is the page"
    finally:
        server.stop()
