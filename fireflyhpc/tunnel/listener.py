"""The local end of the tunnel: a TCP listener bound to 127.0.0.1 only."""

from __future__ import annotations

import errno
import logging
import socket

from fireflyhpc.errors import TunnelError
from fireflyhpc.tunnel.ports import port_holder

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


class Listener:
    """A bound, listening socket on the laptop's loopback.

    Binding happens in the constructor, so a busy port fails before anything
    remote is touched. ``port`` is the real port (useful with port 0).
    Use as a context manager or call :meth:`close`.
    """

    def __init__(self, port: int = 0, *, backlog: int = 128) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            # SO_REUSEADDR lets a restarted tunnel take its port back while old
            # connections sit in TIME_WAIT; on Linux it never allows binding
            # beside another listener.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((LOOPBACK, port))
            sock.listen(backlog)
        except OSError as exc:
            sock.close()
            raise _bind_error(port, exc) from exc
        self._sock = sock
        self.port: int = sock.getsockname()[1]
        self.url = f"http://{LOOPBACK}:{self.port}"
        log.debug("listening on %s:%d", LOOPBACK, self.port)

    def accept(self, timeout: float | None = None) -> socket.socket | None:
        """Return the next client socket (TCP_NODELAY set), or None on timeout/close."""
        try:
            self._sock.settimeout(timeout)
            client, _ = self._sock.accept()
        except (TimeoutError, OSError):
            return None
        client.settimeout(None)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return client

    def fileno(self) -> int:
        """The listening socket's file descriptor (for selectors)."""
        return self._sock.fileno()

    def close(self) -> None:
        """Stop listening and free the port (idempotent)."""
        try:
            self._sock.close()
        except OSError:
            pass

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _bind_error(port: int, exc: OSError) -> TunnelError:
    if exc.errno == errno.EADDRINUSE:
        holder = port_holder(port)
        who = f"by {holder}" if holder else "by another process"
        return TunnelError(f"local port {port} is already in use {who}",
                           hint="choose another --port, or --port 0 for any free port")
    if exc.errno == errno.EACCES:
        return TunnelError(f"not allowed to listen on local port {port}",
                           hint="ports below 1024 need privileges; use --port 0")
    return TunnelError(f"cannot listen on {LOOPBACK}:{port}: {exc.strerror or exc}")
