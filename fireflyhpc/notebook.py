"""Show a payload server inside a Jupyter (or VS Code) notebook.

The frame never carries the token: each time it is displayed, the kernel asks
the server for a single-use ticket (see :mod:`fireflyhpc.server.frames` for
the scheme and its threat model), so the IFrame works from any notebook
origin (``localhost``, ``127.0.0.1``, another host or a webview) while the
notebook's DOM and saved file hold nothing reusable.
"""

from __future__ import annotations

import html
import http.client
import json
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from fireflyhpc.errors import ConfigError, ServerError
from fireflyhpc.server.frames import MINT_PATH, TICKET_PARAM

log = logging.getLogger(__name__)


def split_token_url(url: str) -> tuple[str, str | None]:
    """``http://h:p/path?token=T&x=1`` -> (``http://h:p/path?x=1``, ``T``).

    Raises ConfigError for anything but an http(s) URL.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"not an http(s) URL: {url!r}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    token = next((value for key, value in query if key == "token"), None)
    rest = urlencode([(key, value) for key, value in query if key != "token"])
    return urlunsplit(parts._replace(query=rest, fragment="")), token


def frame_ticket(server_url: str, token: str, timeout: float = 30.0) -> str:
    """A fresh single-use ticket from the server at ``server_url`` (its root URL,
    as this process reaches it). Raises ServerError if the server refuses or
    cannot be reached.

    Plain ``http.client`` on purpose: no proxy from the environment ever sees
    the token.
    """
    parts = urlsplit(server_url)
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    conn_class = http.client.HTTPSConnection if parts.scheme == "https" else \
        http.client.HTTPConnection
    conn = conn_class(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        conn.request("POST", path + MINT_PATH.lstrip("/"), body=b"",
                     headers={"Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        body = response.read()
    except OSError as exc:
        raise ServerError(f"cannot reach the viewer server at {server_url}: {exc}") from None
    finally:
        conn.close()
    if response.status == 404:
        raise ServerError(f"the server at {server_url} cannot make notebook frames "
                          "(an older fireflyhpc)", hint="restart it, or open its URL in a tab")
    if response.status != 200:
        raise ServerError(f"the server at {server_url} refused a frame ticket "
                          f"(HTTP {response.status})")
    try:
        return str(json.loads(body)["ticket"])
    except (ValueError, KeyError, TypeError):
        raise ServerError(f"the server at {server_url} answered no ticket") from None


@dataclass
class ViewerFrame:
    """A notebook display of a server: an ``<iframe>`` whose URL carries a fresh
    ticket each time it is rendered (so displaying it again works).

    ``server_url`` is where this process reaches the server (with the
    ``token``); ``page_url`` is where the notebook's browser does (the same, or
    a proxy route). Without a token the frame simply shows ``page_url``.
    """

    server_url: str
    token: str | None
    page_url: str
    width: int | str = 700
    height: int | str = 700

    def src(self) -> str:
        """A new frame URL (mints a ticket: use it once, within two minutes)."""
        if self.token is None:
            return self.page_url
        ticket = frame_ticket(self.server_url, self.token)
        sep = "&" if urlsplit(self.page_url).query else "?"
        return f"{self.page_url}{sep}{TICKET_PARAM}={quote(ticket, safe='')}"

    def _repr_html_(self) -> str:
        try:
            src = self.src()
        except ServerError as exc:  # a notebook shows this instead of a formatter traceback
            return f"<pre>fireflyhpc: {html.escape(str(exc))}</pre>"
        return (f'<iframe src="{html.escape(src)}" width="{html.escape(str(self.width))}" '
                f'height="{html.escape(str(self.height))}" frameborder="0" '
                'allow="fullscreen" allowfullscreen></iframe>')

    def __repr__(self) -> str:  # never the token
        return f"ViewerFrame({self.page_url!r}, width={self.width!r}, height={self.height!r})"


def show(url_or_handle: Any, width: int | str = 700, height: int | str = 700, *,
         proxy: bool | None = None) -> ViewerFrame:
    """The viewer of a server, to display in a notebook cell.

    ``url_or_handle`` is a server's token URL (as printed by ``fireflyhpc serve``
    or ``connect``) or a handle from :func:`fireflyhpc.server.spawn_server`.
    Under a Jupyter server with jupyter-server-proxy the frame goes through its
    ``<base_url>proxy/<port>/`` route (``proxy``: None decides, True insists,
    False never; see :mod:`fireflyhpc.notebook_route`). Raises ConfigError if
    the argument is neither, or for proxy=True outside a Jupyter server.
    """
    if isinstance(url_or_handle, str):
        server_url, token = split_token_url(url_or_handle)
    else:
        base = getattr(url_or_handle, "base_url", None)
        if not isinstance(base, str):
            raise ConfigError("show() needs an http(s) URL or a server handle, not a "
                              f"{type(url_or_handle).__name__}")
        server_url, _ = split_token_url(base)
        token = getattr(url_or_handle, "token", None)
    from fireflyhpc.notebook_route import frame_base

    return ViewerFrame(server_url, token, frame_base(server_url, proxy=proxy), width, height)
