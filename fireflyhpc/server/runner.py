"""Run the payload: bind, announce, serve with waitress until SIGINT/SIGTERM/SIGHUP.

One process, no reloader. The listening socket is bound here (port 0 lets the
OS pick a free port, so there is no pick-then-bind race) and handed to waitress
(a production WSGI server: threads, HTTP/1.1 keep-alive, ``wsgi.file_wrapper``
streaming of files); Firefly's Flask server (``--app firefly-flask``) goes to
eventlet's instead, which speaks websockets
(:class:`fireflyhpc.server.firefly_flask.GreenLoop`).

A stop signal never raises inside waitress: its event loop catches whatever a
channel's handler raises, logs it, closes that one channel and serves on, so an
exception raised by a signal handler that lands there is lost and the server never
stops. The signal sets an event instead (:mod:`fireflyhpc.signals`), and the loop
is ended from its own thread through waitress's trigger (:class:`ServerLoop`).
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import secrets
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TextIO

from fireflyhpc.browser import open_browser
from fireflyhpc.errors import ConfigError, ServerError
from fireflyhpc.signals import StopSignals, signal_name
from fireflyhpc.urls import token_url

log = logging.getLogger(__name__)

# Waitress sends a file in chunks of the socket's SO_SNDBUF (16 KiB by default
# here: many syscalls per MB). Accepted sockets inherit it from the listening
# socket, so it is set there. Measured with benchmarks/payload.py (server CPU per
# GiB): 16 KiB 0.42 s, 128-256 KiB 0.18-0.23 s, 1 MiB 0.44 s (large reads cost
# fresh memory each time); http.server 0.32-0.36 s. 256 KiB (the kernel doubles it).
SEND_BUFFER = 256 * 1024

# 8 threads serve a page's parallel fetches.
WAITRESS_SETTINGS: dict[str, Any] = {
    "threads": 8,
    "connection_limit": 200,
    "channel_timeout": 300,
    "ident": "fireflyhpc",
    "clear_untrusted_proxy_headers": True,
}


@dataclass
class Listener:
    """A bound, listening socket and how to reach it."""

    sock: socket.socket
    host: str
    port: int
    loopback: bool
    url_host: str = field(default="")

    def base_url(self) -> str:
        return f"http://{self.url_host}:{self.port}/"


def is_loopback(address: str) -> bool:
    """True for 127.0.0.0/8 and ::1 (and IPv4-mapped loopback)."""
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool(ip.is_loopback or (mapped is not None and mapped.is_loopback))


def resolve(host: str, port: int) -> tuple[Any, ...]:
    """The getaddrinfo tuple to bind ``host``:``port`` with (first match).

    Raises ConfigError for a bad port or an unresolvable host.
    """
    if not 0 <= port <= 65535:
        raise ConfigError(f"port {port} is out of range (0-65535)")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot resolve host {host!r}: {exc.strerror}") from None
    return tuple(infos[0])


class AddressInUse(ServerError):
    """The address and port are taken (another server listens there)."""


def listen(host: str, ports: tuple[int, int]) -> Listener:
    """Listen on ``host`` on a free port from ``ports`` (LOW, HIGH), starting at a random
    one so that servers started together spread out; ``(0, 0)``: any free port.

    Raises ConfigError for an unresolvable host, ServerError when no port is free.
    """
    low, high = ports
    candidates = list(range(low, high + 1))
    start = secrets.randbelow(len(candidates))
    for port in candidates[start:] + candidates[:start]:
        try:
            return bind(resolve(host, port))
        except AddressInUse:
            if low == high:
                raise
    raise ServerError(f"cannot listen on {host}: every port of {low}-{high} is in use")


def bind(address: tuple[Any, ...], backlog: int = 128) -> Listener:
    """Bind and listen on a :func:`resolve` result (port 0: the OS picks one).

    Raises ServerError if the address cannot be bound (in use, not permitted).
    """
    family, socktype, proto, _, sockaddr = address
    sock = socket.socket(family, socktype, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        sock.bind(sockaddr)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        reason = {errno.EADDRINUSE: "is already in use",
                  errno.EACCES: "needs privileges (use a port above 1023, or 0)",
                  errno.EADDRNOTAVAIL: "is not an address of this machine"}.get(
                      exc.errno or 0, exc.strerror)
        error = AddressInUse if exc.errno == errno.EADDRINUSE else ServerError
        raise error(f"cannot listen on {sockaddr[0]} port {sockaddr[1]}: {reason}") from None
    bound_host, bound_port = sock.getsockname()[:2]
    url_host = bound_host
    if bound_host in ("0.0.0.0", "::"):
        url_host = socket.gethostname()
    elif ":" in bound_host:
        url_host = f"[{bound_host}]"
    return Listener(sock, bound_host, bound_port, is_loopback(bound_host), url_host)


def _open_browser(url: str) -> None:
    """Open ``url`` in a graphical browser if there is one, without blocking."""
    if not open_browser(url):
        log.info("no display: not opening a browser")


@dataclass
class RunOptions:
    """What :func:`run` needs beyond the WSGI app."""

    token: str | None
    ready_file: Path | None = None
    app: str = ""  # the web app's kind, for the ready file
    open_browser: bool = True
    register: bool = True
    out: TextIO = field(default_factory=lambda: sys.stdout)


class ServerLoop:
    """waitress serving ``app`` on a listening socket, with an end callable from any thread.

    :meth:`run` blocks in the event loop (in the calling thread); :meth:`end` makes
    it return soon, even when called before :meth:`run` started; :meth:`close`
    closes every connection and stops the worker threads (waiting at most
    ``THREAD_GRACE`` seconds for a request being handled).
    """

    THREAD_GRACE = 5.0

    def __init__(self, app: Callable[..., Any], sock: socket.socket) -> None:
        import waitress

        self._map: dict[int, Any] = {}  # ours, so ending the loop needs no private attribute
        self.server = waitress.create_server(app, map=self._map, sockets=[sock],
                                             **WAITRESS_SETTINGS)

    def run(self) -> None:
        """Serve until :meth:`end` (the loop runs while its socket map is not empty)."""
        self.server.run()

    def end(self, signum: int | None = None) -> None:
        """Make :meth:`run` return: empty the socket map from inside the loop's thread."""
        if signum is not None:
            log.info("%s: stopping", signal_name(signum))
        try:
            self.server.trigger.pull_trigger(self._map.clear)
        except OSError:  # the trigger is closed: the loop is over already
            pass

    def close(self) -> None:
        """Close the connections, stop the worker threads, then the trigger and listener.

        The connections go first: that wakes a worker waiting to hand over more of
        a response. The trigger goes last: a worker that finishes pulls it, and a
        closed descriptor's number may already belong to another file. If a
        worker outlives the grace, both stay open (the process is about to exit).
        """
        for channel in list(self.server.active_channels.values()):
            channel.handle_close()
        self._map.clear()
        tasks = self.server.task_dispatcher
        tasks.shutdown(timeout=self.THREAD_GRACE)
        if tasks.threads:
            log.warning("a request is still being handled; exiting without waiting for it")
            return
        self.server.close()


def _loop(app: Callable[..., Any], sock: socket.socket, kind: str) -> Any:
    """waitress, or eventlet for Firefly's Flask server (Socket.IO over websockets)."""
    from fireflyhpc.server.viewers import FIREFLY_FLASK

    if kind == FIREFLY_FLASK:
        from fireflyhpc.server.firefly_flask import GreenLoop

        return GreenLoop(app, sock)
    return ServerLoop(app, sock)


def run(app: Callable[..., Any], listener: Listener, options: RunOptions,
        stop: StopSignals) -> None:
    """Serve ``app`` on ``listener`` until ``stop`` is set; clean up always.

    Once listening it records itself in the registry, writes the ready file and
    prints the token URL as one stdout line. Returns soon after ``stop`` is set,
    wherever that happens (before, during or after the loop).
    """
    from fireflyhpc.server import registry

    loop = _loop(app, listener.sock, options.app)
    base = listener.base_url()
    entry: Path | None = None
    try:
        if options.register:
            try:
                entry = registry.register(listener.host, listener.port, base, options.token)
            except OSError as exc:  # the server works without; only quit_all_servers misses it
                log.warning("cannot record this server in the registry: %s", exc)
        if options.ready_file is not None:
            write_ready_file(options.ready_file, listener, options.app)
        url = token_url(base, options.token)
        print(url, file=options.out, flush=True)
        if options.open_browser:
            _open_browser(url)
        stop.on_stop(loop.end)  # at once if the signal came already
        loop.run()
    finally:
        loop.close()
        if entry is not None:
            registry.unregister(entry)
        if options.ready_file is not None:
            _remove(options.ready_file)


def write_ready_file(path: Path, listener: Listener, app: str = "") -> None:
    """Atomically write pid, host, port, url and the web app's kind (never the
    token) to ``path``."""
    from fireflyhpc.server.registry import write_json_atomic

    document = {"version": 1, "pid": os.getpid(), "host": listener.host,
                "port": listener.port, "url": listener.base_url(), "app": app}
    try:
        write_json_atomic(Path(path), document, mode=0o600)
    except OSError as exc:
        raise ServerError(f"cannot write ready file {path}: {exc.strerror}") from None


def _remove(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
