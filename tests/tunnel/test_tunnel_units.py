"""Pure parts of the tunnel (golden tests) and the engine over plain local TCP.

The engine tests use a real local TCP server as the target and a Path whose
"channel" is a plain TCP connection to it: no SSH, but real sockets, real
threads, real half-close, real 502 answers.
"""

from __future__ import annotations

import socket
import socketserver
import threading
import time

import pytest

from fireflyhpc.errors import ConfigError, TunnelError
from fireflyhpc.hostspec import host_name
from fireflyhpc.tunnel.engine import PathBroken, TargetRefused, Tunnel
from fireflyhpc.tunnel.forward import pump
from fireflyhpc.tunnel.listener import Listener
from fireflyhpc.tunnel.reply import http_502, looks_like_http
from fireflyhpc.validate import checked, parse_port

# -- pure ----------------------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [("0", 0), ("22", 22), ("65535", 65535), (8080, 8080),
                                           (" 80 ", 80)])
def test_parse_port_accepts(text, expected) -> None:
    assert parse_port(text, allow_zero=True) == expected


@pytest.mark.parametrize("text", ["65536", "abc", "-1", "", "1e3", "８０", "0x50"])
def test_parse_port_rejects_with_one_line(text) -> None:
    with pytest.raises(ConfigError) as err:
        parse_port(text, what="local port", allow_zero=True)
    assert "\n" not in str(err.value) and "local port" in str(err.value)


def test_parse_port_zero_not_allowed_for_remote() -> None:
    with pytest.raises(ConfigError, match="from 1 to 65535"):
        parse_port("0", what="remote port")


@pytest.mark.parametrize("name", ["node1", "cn-0042", "gpu_07", "node1.cluster.example.org",
                                  "10.1.2.3"])
def test_validate_host_accepts(name) -> None:
    assert checked(host_name, name, "node") == name


@pytest.mark.parametrize("name", ["node1;id", "a'; echo foo", "$(reboot)", "`id`", "n1 n2",
                                  "node1\nid", "a|b", "a&b", "-oProxyCommand=x", "", "a..b",
                                  "node>x", "x" * 300])
def test_validate_host_rejects(name) -> None:
    with pytest.raises(ConfigError) as err:
        checked(host_name, name, "node")
    assert "\n" not in str(err.value)


def test_http_502_golden() -> None:
    assert http_502("nothing answers at node1:8080: connect failed: Connection refused") == (
        b"HTTP/1.1 502 Bad Gateway\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n"
        b"Content-Length: 173\r\n"
        b"X-Fireflyhpc-Error: nothing answers at node1:8080: connect failed: Connection refused\r\n"
        b"Cache-Control: no-store\r\nConnection: close\r\n\r\n"
        b"<!doctype html><title>fireflyhpc: 502 Bad Gateway</title><h1>502 Bad Gateway</h1>"
        b"<p>fireflyhpc tunnel: nothing answers at node1:8080: connect failed: Connection "
        b"refused</p>\n")


def test_http_502_escapes_html() -> None:
    assert b"&lt;script&gt;" in http_502("<script>")


def test_looks_like_http() -> None:
    assert looks_like_http(b"GET / HTTP/1.1\r\n")
    assert not looks_like_http(b"\x16\x03\x01")  # TLS
    assert not looks_like_http(b"SSH-2.0-")


# -- the engine over local TCP --------------------------------------------------------------

class Echo(socketserver.BaseRequestHandler):
    """Echo until EOF, then say how many bytes came, then close (tests half-close)."""

    def handle(self) -> None:
        total = 0
        while data := self.request.recv(65536):
            total += len(data)
            self.request.sendall(data)
        self.request.sendall(b"TOTAL %d" % total)


@pytest.fixture
def echo_server():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


class TcpChannel:
    """A plain TCP connection seen as a channel."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.recv = sock.recv
        self.sendall = sock.sendall

    def shutdown_write(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.sock.close()


class LocalPath:
    """A Path to a local port; ``alive`` decides what probes say."""

    description = "local test path"

    def __init__(self, port: int) -> None:
        self.port = port
        self.alive = True
        self.closed = False

    def forward(self, sock: socket.socket) -> None:
        if not self.alive:
            raise PathBroken("path is dead")
        try:
            chan = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        except ConnectionRefusedError as exc:
            raise TargetRefused("connect failed: Connection refused") from exc
        chan.settimeout(None)
        pump(sock, TcpChannel(chan))

    def check_target(self) -> None:
        pass

    def probe(self, timeout: float) -> None:
        if not self.alive:
            raise PathBroken("no keepalive reply")

    def close(self) -> None:
        self.closed = True


def talk(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while data := sock.recv(65536):
            chunks.append(data)
        return b"".join(chunks)


def test_pump_passes_data_and_half_close(echo_server) -> None:
    paths = [LocalPath(echo_server)]
    with Tunnel(Listener(0), lambda: paths[-1], target="local") as tunnel:
        payload = bytes(range(256)) * 4096
        assert talk(tunnel.listener.port, payload) == payload + b"TOTAL %d" % len(payload)


def connection_threads() -> list[threading.Thread]:
    """The tunnel's per-connection threads still alive: ``conn`` and pump's ``up``."""
    return [t for t in threading.enumerate() if t.name == "conn" or t.name.startswith("up")]


def settle(done, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    """Wait (bounded) until ``done()``: threads end a moment after their sockets."""
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        time.sleep(0.02)


def test_many_connections_do_not_block_each_other(echo_server) -> None:
    baseline = threading.active_count()  # before the tunnel and its own threads exist
    with Tunnel(Listener(0), lambda: LocalPath(echo_server), target="local") as tunnel:
        port = tunnel.listener.port
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
        try:  # twenty open, silent connections; a new one is still served
            assert talk(port, b"hello") == b"helloTOTAL 5"
            assert sum(t.name == "conn" for t in connection_threads()) >= 20
        finally:
            for sock in idle:
                sock.close()
        # Each connection's threads end with it, while the tunnel still runs.
        settle(lambda: not connection_threads())
        assert connection_threads() == []
    settle(lambda: threading.active_count() <= baseline)
    assert threading.active_count() <= baseline, threading.enumerate()


def test_target_refused_gives_502_and_tunnel_stays_up() -> None:
    with socket.socket() as spare:
        spare.bind(("127.0.0.1", 0))
        dead_port = spare.getsockname()[1]
    path = LocalPath(dead_port)
    with Tunnel(Listener(0), lambda: path, target="node1:8080") as tunnel:
        for _ in range(2):
            answer = talk(tunnel.listener.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
            assert b"nothing answers at node1:8080" in answer
        assert talk(tunnel.listener.port, b"\x00binary") == b""  # not HTTP: just closed


def test_dead_path_is_replaced_and_waiting_clients_are_served(echo_server) -> None:
    made: list[LocalPath] = []

    def connect() -> LocalPath:
        if len(made) in (1, 2):  # the first two reconnects fail, like a network still down
            made.append(LocalPath(echo_server))
            raise OSError("network is unreachable")
        made.append(LocalPath(echo_server))
        return made[-1]

    with Tunnel(Listener(0), connect, target="local", keepalive=0.2, probe_timeout=0.2,
                max_backoff=0.3) as tunnel:
        port = tunnel.listener.port
        made[0].alive = False
        # This client arrives while the path is dead: it waits and is then served.
        assert talk(port, b"late") == b"lateTOTAL 4"
        assert made[0].closed and tunnel.reconnects == 1 and len(made) == 4
        assert tunnel.listener.port == port


def test_close_frees_the_port_and_ends_connections(echo_server) -> None:
    tunnel = Tunnel(Listener(0), lambda: LocalPath(echo_server), target="local")
    tunnel.start()
    port = tunnel.listener.port
    open_conn = socket.create_connection(("127.0.0.1", port))
    open_conn.sendall(b"x")
    assert open_conn.recv(1) == b"x"
    tunnel.close()
    open_conn.settimeout(5)
    assert open_conn.recv(100) in (b"", b"TOTAL 1")
    Listener(port).close()  # the port is free for the next tunnel at once


def test_start_fails_cleanly_when_target_refuses() -> None:
    class Refusing(LocalPath):
        def check_target(self) -> None:
            raise TargetRefused("connect failed: Connection refused")

    path = Refusing(1)
    listener = Listener(0)
    tunnel = Tunnel(listener, lambda: path, target="node1:1")
    with pytest.raises(TunnelError, match="nothing answers at node1:1"):
        tunnel.start()
    assert path.closed
    listener.close()


def test_busy_port_names_the_holder() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        with pytest.raises(TunnelError, match=r"in use by python[\d.]* \(pid \d+"):
            Listener(holder.getsockname()[1])
