"""What a local client hears when its connection cannot be forwarded.

The tunnel carries any TCP protocol, but nearly every client is a browser. So
if the first bytes look like an HTTP request, the client gets a short
``502 Bad Gateway`` page that says why; anything else is simply closed. The
reason is logged by the caller either way.
"""

from __future__ import annotations

import html
import socket

_METHODS = (b"GET ", b"POST ", b"HEAD ", b"PUT ", b"DELETE ", b"OPTIONS ", b"PATCH ")


def http_502(reason: str) -> bytes:
    """Return a complete HTTP/1.1 502 response explaining ``reason`` (pure)."""
    body = ("<!doctype html><title>fireflyhpc: 502 Bad Gateway</title>"
            "<h1>502 Bad Gateway</h1><p>fireflyhpc tunnel: "
            f"{html.escape(reason)}</p>\n").encode()
    head = ("HTTP/1.1 502 Bad Gateway\r\n"
            "Content-Type: text/html; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"X-Fireflyhpc-Error: {' '.join(reason.split())[:200]}\r\n"
            "Cache-Control: no-store\r\n"
            "Connection: close\r\n\r\n").encode("latin-1", "replace")
    return head + body


def looks_like_http(first: bytes) -> bool:
    """True if ``first`` starts like an HTTP/1.x request line (pure)."""
    return first.startswith(_METHODS)


def refuse(sock: socket.socket, reason: str, *, wait: float = 2.0) -> None:
    """Answer ``sock`` with a 502 if it speaks HTTP, else just end it. Never raises."""
    try:
        sock.settimeout(wait)
        first = sock.recv(65536, socket.MSG_PEEK)
        if looks_like_http(first):
            _drain_request_head(sock)
            sock.sendall(http_502(reason))
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _drain_request_head(sock: socket.socket, limit: int = 65536) -> None:
    """Read the request head so closing does not reset the connection early."""
    seen = b""
    while b"\r\n\r\n" not in seen and len(seen) < limit:
        chunk = sock.recv(8192)
        if not chunk:
            return
        seen += chunk
