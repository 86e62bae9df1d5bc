"""Letting a notebook show the viewer in an IFrame, from any origin, without cookies.

The problem. A notebook page (``http://localhost:8888``, a VS Code webview, a
JupyterHub on another host) that embeds ``http://127.0.0.1:PORT/`` is a
*cross-site* frame. Browsers do not send the server's SameSite=Strict cookie
to it, so every request after the first ``?token=`` visit was refused.
Loosening the cookie is no way out: SameSite=None needs ``Secure``, which an
``http://`` server cannot set portably; partitioned cookies need ``Secure``
too; and browsers that block third-party cookies outright would still fail.
Putting the token itself into the frame's URL would leave it in the
notebook's DOM and in the saved ``.ipynb``.

The scheme. Nothing secret lives in the notebook, and nothing depends on cookies:

1. The kernel, which holds the token, asks the server for a *ticket*:
   ``POST /_frame`` with ``Authorization: Bearer <token>`` (a header, never a
   cookie, so no other page can mint one through the user's browser). A ticket
   is random (256 bits), works once, and expires after :data:`TICKET_TTL`
   seconds (the server's own monotonic clock: no clock skew between a laptop
   and a compute node).
2. The IFrame's ``src`` is ``<server>/?ticket=<ticket>``. The server consumes the
   ticket and answers 303 to ``_frame/<key>/`` (relative, so it also works behind
   a path prefix such as jupyter-server-proxy's ``<base_url>proxy/<port>/``).
3. ``<key>`` is the frame's own credential: random, kept only in this server's
   memory, and it travels in the URL *path*, so every relative URL the web app
   loads (scripts, ``datasets.json``, data files) carries it without cookies or
   headers. The path prefix is stripped before the app sees the request. With
   ``--app firefly-flask`` that includes Firefly's Socket.IO connection (polling
   and websocket), which its pages are made to open under their own prefix
   (:func:`fireflyhpc.server.firefly_flask.prefix_aware_pages`); Firefly's
   routes for Python stay token-only.

Threat model (what each party can see):

- *The notebook page and its saved file* see only the ticket: used at once by
  the frame, or useless after :data:`TICKET_TTL`. A reopened notebook shows
  "run the cell again" instead of the viewer.
- *Other origins* (any web page open in the browser) cannot read the frame's
  URL, the 303's ``Location``, or any response: the server sends no CORS
  headers, every response has ``Referrer-Policy: no-referrer``, and the key is
  never sent to another host. Guessing a ticket or key is guessing 256 bits.
- *Other users of the host* (a shared login or compute node) cannot reach the
  server without a ticket or key either; the loopback binding and the token
  stay as they were.
- *Framing by another page* (clickjacking) needs a valid key, which only the
  frame that redeemed the ticket has. We do not add ``frame-ancestors``: the
  notebook's origin is not known to the kernel reliably (localhost or
  127.0.0.1, a proxy, a webview), and pinning the wrong one would break the
  frame without adding protection the key does not already give.

Top-level navigation keeps the ``?token=`` + SameSite=Strict cookie route of
:mod:`fireflyhpc.server.auth`; a ticket opened in a tab works too (it lands on
the key path).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import OrderedDict
from typing import Any, Callable, Iterable

from fireflyhpc.server.auth import FORBIDDEN_PAGE, FRAME_ENV, bearer_matches

MINT_PATH = "/_frame"
PREFIX = "/_frame/"
TICKET_PARAM = "ticket"
TICKET_TTL = 120.0  # seconds a ticket stays valid if unused
MAX_TICKETS = 1000  # unused tickets kept at once (the oldest are dropped)
MAX_FRAMES = 1000  # frame keys kept at once (the least recently used are dropped)

EXPIRED_PAGE = FORBIDDEN_PAGE.replace(
    "<h1>Access token needed</h1>",
    "<h1>This viewer link has expired</h1>\n<p>A notebook's viewer link works once, "
    "for a short time. Run the notebook cell that showed the viewer again.</p>")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class FramePasses:
    """The server's tickets and frame keys (thread-safe, in memory only)."""

    def __init__(self, ttl: float = TICKET_TTL, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.ttl = ttl
        self.clock = clock
        self._tickets: OrderedDict[str, float] = OrderedDict()  # ticket -> expiry
        self._frames: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def mint(self) -> str:
        """A new single-use ticket."""
        ticket = secrets.token_urlsafe(32)
        now = self.clock()
        with self._lock:
            for old, expiry in list(self._tickets.items()):
                if expiry > now and len(self._tickets) < MAX_TICKETS:
                    break
                del self._tickets[old]
            self._tickets[ticket] = now + self.ttl
        return ticket

    def redeem(self, ticket: str) -> str | None:
        """The new frame key for a valid, unused ticket (which is used up); else None."""
        with self._lock:
            expiry = self._tickets.pop(ticket, None)
            if expiry is None or expiry <= self.clock():
                return None
            key = secrets.token_urlsafe(32)
            self._frames[key] = None
            while len(self._frames) > MAX_FRAMES:
                self._frames.popitem(last=False)
            return key

    def valid_key(self, key: str) -> bool:
        """True if ``key`` is a live frame key (and marks it recently used)."""
        # A dictionary lookup hashes the key first: its timing tells nothing useful
        # about the stored keys.
        with self._lock:
            if key not in self._frames:
                return False
            self._frames.move_to_end(key)
            return True


def _answer(start_response: Callable[..., Any], status: str, body: bytes = b"",
            headers: Iterable[tuple[str, str]] = (), ctype: str = "text/html; charset=utf-8"
            ) -> list[bytes]:
    start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body))),
                            ("Cache-Control", "no-store"), ("Referrer-Policy", "no-referrer"),
                            ("X-Content-Type-Options", "nosniff"), *headers])
    return [body]


def relative_to(path: str, target: str) -> str:
    """A relative reference that, resolved against ``path`` (an absolute URL path),
    gives the absolute path ``target``; correct behind any path prefix."""
    depth = path.count("/") - 1  # directories between the root and the last segment
    return "../" * depth + target.lstrip("/") if target != "/" or depth else "./"


class FrameGate:
    """WSGI middleware: mints tickets, redeems them, and admits requests under
    ``/_frame/<key>/`` (with the prefix moved to ``SCRIPT_NAME``)."""

    def __init__(self, app: WSGIApp, token: str, passes: FramePasses | None = None) -> None:
        self.app = app
        self.token = token
        self.passes = passes or FramePasses()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == MINT_PATH:
            return self._mint(environ, start_response)
        if path.startswith(PREFIX):
            return self._framed(environ, start_response, path)
        ticket = _query_value(environ.get("QUERY_STRING", ""), TICKET_PARAM)
        if ticket is not None:
            return self._redeem(environ, start_response, path, ticket)
        return self.app(environ, start_response)

    def _mint(self, environ: dict[str, Any], start_response: Callable[..., Any]
              ) -> list[bytes]:
        if environ.get("REQUEST_METHOD") != "POST":
            return _answer(start_response, "405 Method Not Allowed", b"POST only\n",
                           [("Allow", "POST")], "text/plain; charset=utf-8")
        if not bearer_matches(environ.get("HTTP_AUTHORIZATION"), self.token):
            return _answer(start_response, "403 Forbidden", FORBIDDEN_PAGE.encode())
        body = json.dumps({"ticket": self.passes.mint(), "param": TICKET_PARAM,
                           "expires_in": self.passes.ttl}).encode()
        return _answer(start_response, "200 OK", body, ctype="application/json")

    def _redeem(self, environ: dict[str, Any], start_response: Callable[..., Any], path: str,
                ticket: str) -> list[bytes]:
        key = self.passes.redeem(ticket)
        if key is None:
            return _answer(start_response, "403 Forbidden", EXPIRED_PAGE.encode())
        rest = _query_without(environ.get("QUERY_STRING", ""), TICKET_PARAM)
        location = relative_to(path or "/", f"{PREFIX}{key}{path or '/'}")
        return _answer(start_response, "303 See Other", b"",
                       [("Location", location + (f"?{rest}" if rest else ""))])

    def _framed(self, environ: dict[str, Any], start_response: Callable[..., Any], path: str
                ) -> Iterable[bytes]:
        key, slash, rest = path[len(PREFIX):].partition("/")
        if not self.passes.valid_key(key):
            return _answer(start_response, "403 Forbidden", EXPIRED_PAGE.encode())
        if not slash:  # relative URLs need the trailing slash
            return _answer(start_response, "308 Permanent Redirect", b"",
                           [("Location", f"{key}/")])
        environ = dict(environ)
        environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + PREFIX + key
        environ["PATH_INFO"] = "/" + rest
        environ[FRAME_ENV] = True
        return self.app(environ, start_response)


def _pairs(query: str) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl

    return parse_qsl(query, keep_blank_values=True)


def _query_value(query: str, name: str) -> str | None:
    if name not in query:
        return None
    for key, value in _pairs(query):
        if key == name:
            return value
    return None


def _query_without(query: str, name: str) -> str:
    from urllib.parse import urlencode

    return urlencode([(k, v) for k, v in _pairs(query) if k != name])
