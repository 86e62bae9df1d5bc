"""The tunnel on the mini cluster: hop modes, backends, integrity, who can use it."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import threading

import psutil
import pytest
from tunnel_helpers import http_get, listening, run_tunnel, stop_process, wait_until
from tunnel_node_server import blob_pieces

pytestmark = pytest.mark.cluster

MODES = [("ssh", "openssh"), ("direct", "openssh"), ("ssh", "paramiko"), ("direct", "paramiko")]


def server_for(hop: str, loop_server, addr_server):
    return addr_server if hop == "direct" else loop_server


@pytest.mark.parametrize("hop,backend", MODES, ids=[f"{h}-{b}" for h, b in MODES])
def test_forward_in_each_hop_mode(cluster, start_tunnel, loop_server, addr_server, hop,
                                  backend) -> None:
    server = server_for(hop, loop_server, addr_server)
    tunnel = start_tunnel("node1", str(server.port), "--login", cluster.login_host,
                          "--hop", hop, ssh=backend)
    status, body, _ = http_get(tunnel.url, "/hello", server.token)
    assert status == 200
    # Only node1's server knows this token, so a 200 means we reached it.
    assert body.decode().endswith(f" as {cluster.user}\n")
    # Without the token the node's server refuses, tunnel or not.
    assert http_get(tunnel.url, "/hello", None)[0] == 403
    assert tunnel.stop() == 0
    assert not listening(tunnel.port), "the local port must be free after SIGTERM"


@pytest.mark.parametrize("backend", ["openssh", "paramiko"])
def test_login_given_as_user_at_host_colon_port(cluster, start_tunnel, addr_server,
                                                 backend) -> None:
    """user@alias:port: the alias resolves through ssh_config, the user and port given win
    (OpenSSH gets -p PORT user@alias, not a host called alias:port)."""
    login = f"{cluster.user}@{cluster.login_host}:22"
    tunnel = start_tunnel("node1", str(addr_server.port), "--login", login, "--hop", "direct",
                          ssh=backend)
    status, body, _ = http_get(tunnel.url, "/hello", addr_server.token)
    assert status == 200 and body.decode().endswith(f" as {cluster.user}\n")
    assert tunnel.stop() == 0
    # The port given is the one dialled: nothing listens on login1's port 2.
    done = run_tunnel(cluster, "node1", str(addr_server.port), "--login",
                      f"{cluster.user}@{cluster.login_host}:2", "--hop", "direct",
                      ssh=backend)
    assert done.returncode == 4 and "port 2" in done.stderr, done.stderr


def test_auto_hop_uses_ssh_when_the_node_accepts_it(cluster, start_tunnel, loop_server) -> None:
    # The loopback server is reachable only through an SSH session into node1.
    tunnel = start_tunnel("node1", str(loop_server.port), "--login", cluster.login_host)
    assert http_get(tunnel.url, "/hello", loop_server.token)[0] == 200


def test_login_and_hop_from_the_cluster_profile(cluster, start_tunnel, addr_server) -> None:
    # No --login: the bench's profile `mini` names login1. Its hop (auto) is overridden
    # by the flag, and the direct hop reaches a server that only listens on node1's address.
    tunnel = start_tunnel("--cluster", "mini", "--hop", "direct", "node1",
                          str(addr_server.port))
    assert http_get(tunnel.url, "/hello", addr_server.token)[0] == 200


def test_laptop_cannot_reach_node1_but_the_tunnel_can(cluster, start_tunnel, addr_server) -> None:
    with pytest.raises(OSError):
        socket.create_connection((cluster.addr("node1"), addr_server.port), timeout=5).close()
    tunnel = start_tunnel("node1", str(addr_server.port), "--login", cluster.login_host,
                          "--hop", "direct")
    assert http_get(tunnel.url, "/hello", addr_server.token)[0] == 200


@pytest.mark.parametrize("backend", ["openssh", "paramiko"])
def test_integrity_256_mib_through_8_parallel_connections(cluster, start_tunnel, loop_server,
                                                          backend) -> None:
    tunnel = start_tunnel("node1", str(loop_server.port), "--login", cluster.login_host,
                          "--hop", "ssh", ssh=backend)
    size = 32 * 2**20
    got: dict[int, str] = {}

    def fetch(seed: int) -> None:
        status, body, _ = http_get(tunnel.url, f"/blob?seed={seed}&n={size}", loop_server.token,
                                   timeout=300)
        got[seed] = hashlib.sha256(body).hexdigest() if status == 200 else f"HTTP {status}"

    threads = [threading.Thread(target=fetch, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    for seed in range(8):
        expected = hashlib.sha256()
        for piece in blob_pieces(seed, size):
            expected.update(piece)
        assert got.get(seed) == expected.hexdigest(), f"connection {seed} corrupted or failed"


def test_listener_is_on_loopback_only(cluster, start_tunnel, loop_server) -> None:
    tunnel = start_tunnel("node1", str(loop_server.port), "--login", cluster.login_host)
    sockets = [c for c in psutil.net_connections(kind="inet")
               if c.status == psutil.CONN_LISTEN and c.laddr.port == tunnel.port]
    assert [c.laddr.ip for c in sockets] == ["127.0.0.1"]
    # Not on the laptop's bench address, from the laptop itself ...
    with pytest.raises(OSError):
        socket.create_connection((cluster.laptop_addr, tunnel.port), timeout=5).close()
    # ... nor from the login node, which can reach the laptop's address.
    probe = (f"import socket; socket.create_connection(('{cluster.laptop_addr}', "
             f"{tunnel.port}), timeout=5)")
    done = cluster.run_in(cluster.login_host, ["python3", "-c", probe])
    assert done.returncode != 0 and "Connection refused" in done.stderr


def test_other_user_cannot_use_the_tunnel(cluster, start_tunnel, loop_server) -> None:
    """What "cannot use" means, and is tested here:

    - The node side: the ssh hop's target is node1's loopback, which every user on
      node1 can connect to; the server's token is what protects it. The other user
      on node1, without the token, gets 403.
    - The laptop side: the listener is on the laptop's loopback (tested above); a
      local client without the token gets 403 from the node's server too.
    - The OpenSSH backend's control sockets (whoever can connect to one opens
      channels as us) live in a 0700 directory: the other user cannot use them.
    """
    tunnel = start_tunnel("node1", str(loop_server.port), "--login", cluster.login_host,
                          ssh="openssh")
    fetch = (f"import urllib.request, urllib.error\ntry:\n"
             f"    urllib.request.urlopen('http://127.0.0.1:{loop_server.port}/hello', timeout=10)\n"
             f"except urllib.error.HTTPError as e:\n    print(e.code)\n")
    done = cluster.run_in("node1", ["runuser", "-u", cluster.other_user, "--",
                                    "/usr/bin/python3", "-c", fetch])
    assert done.stdout.strip() == "403", done.stderr
    assert http_get(tunnel.url, "/hello", "wrong-token")[0] == 403

    controls = [arg for child in psutil.Process(tunnel.proc.pid).children(recursive=True)
                for arg in _control_paths(child)]
    assert controls, "the OpenSSH backend runs ssh masters with control sockets"
    for path in controls:
        directory = path.rsplit("/", 1)[0]
        assert (psutil.os.stat(directory).st_mode & 0o777) == 0o700
        other = subprocess.run(["runuser", "-u", cluster.other_user, "--", "ssh", "-F",
                                "/dev/null", "-S", path, "-O", "check", "x"],
                               capture_output=True, text=True, timeout=30)
        assert other.returncode != 0
        assert "Permission denied" in other.stderr


def _control_paths(proc: psutil.Process) -> list[str]:
    try:
        argv = proc.cmdline()
    except psutil.NoSuchProcess:
        return []
    if "-M" in argv or "ControlMaster=yes" in argv:
        return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "-S"]
    return []


def test_sigterm_closes_everything(cluster, start_tunnel, loop_server) -> None:
    tunnel = start_tunnel("node1", str(loop_server.port), "--login", cluster.login_host)
    children = psutil.Process(tunnel.proc.pid).children(recursive=True)
    assert children, "the default backend runs ssh masters"
    controls = [path for child in children for path in _control_paths(child)]
    assert http_get(tunnel.url, "/hello", loop_server.token)[0] == 200
    tunnel.proc.send_signal(signal.SIGTERM)
    assert tunnel.proc.wait(timeout=30) == 0
    assert not listening(tunnel.port)
    assert not [c for c in children if _alive(c)], "ssh processes left behind"
    assert controls and not [p for p in controls if os.path.exists(os.path.dirname(p))], \
        "the control socket directory must be removed"
    assert "Traceback" not in tunnel.proc.stderr.read()


def test_sigkill_leaves_no_ssh_behind(cluster, start_tunnel, loop_server) -> None:
    """Killed outright (a Jupyter kernel restart does that), the tunnel cannot clean up
    itself: its ssh masters notice and end, and their control directory goes."""
    tunnel = start_tunnel("node1", str(loop_server.port), "--login", cluster.login_host,
                          ssh="openssh")
    children = psutil.Process(tunnel.proc.pid).children(recursive=True)
    controls = [path for child in children for path in _control_paths(child)]
    assert controls, "the OpenSSH backend runs ssh masters"
    assert http_get(tunnel.url, "/hello", loop_server.token)[0] == 200
    tunnel.proc.kill()
    tunnel.proc.wait(timeout=30)
    assert wait_until(lambda: not [c for c in children if _alive(c)], 15), \
        f"ssh processes left behind: {[c.pid for c in children if _alive(c)]}"
    assert not [p for p in controls if os.path.exists(os.path.dirname(p))], \
        "the control socket directory must be removed"
    assert not listening(tunnel.port)


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


COUNT_UNTIL_EOF = """
import socket, sys
srv = socket.create_server(("127.0.0.1", 0))
print("ready", srv.getsockname()[1], flush=True)
for _ in range(4):
    conn, _ = srv.accept()
    total = 0
    while data := conn.recv(65536):
        total += len(data)
    conn.sendall(b"got %d" % total)
    conn.close()
"""


@pytest.mark.parametrize("backend", ["openssh", "paramiko"])
def test_half_close_passes_through(cluster, start_tunnel, backend) -> None:
    """The client shuts its sending side; the server sees EOF and can still answer."""
    server = subprocess.Popen(["ip", "netns", "exec", cluster.netns("node1"), "runuser", "-u",
                               cluster.user, "--", "/usr/bin/python3", "-c", COUNT_UNTIL_EOF],
                              stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline().split()[1])
        tunnel = start_tunnel("node1", str(port), "--login", cluster.login_host,
                              "--hop", "ssh", ssh=backend)
        with socket.create_connection(("127.0.0.1", tunnel.port), timeout=30) as sock:
            sock.sendall(b"x" * 300_000)
            sock.shutdown(socket.SHUT_WR)
            answer = b""
            while data := sock.recv(100):
                answer += data
        assert answer == b"got 300000"
    finally:
        stop_process(server)
