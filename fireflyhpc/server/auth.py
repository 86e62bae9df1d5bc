"""The access token: where it comes from, and how every request must carry it.

A request is let in when it carries the token as

- ``?token=<token>`` in the URL: the answer is a 303 redirect to the same URL
  without the token that sets an HttpOnly, SameSite=Strict cookie (Path=/), so
  the token leaves the address bar and the browser history;
- that cookie (its name is derived from a hash of the token, so several servers
  on one host, whose cookies browsers do not separate by port, do not clash);
- an ``Authorization: Bearer <token>`` header, for scripts;
- a notebook frame's key in the URL path (``/_frame/<key>/...``), obtained with a
  single-use ticket: see :mod:`fireflyhpc.server.frames` (cross-site frames get
  no SameSite cookie).

Redirects use relative ``Location`` values, so they stay right behind a path
prefix (a frame's key, or a proxy such as jupyter-server-proxy).

Anything else gets a short 403 page saying how to get in. Comparison is
constant-time. The token never appears on a command line: it comes from the
``FIREFLYHPC_TOKEN`` environment variable or a file only the user can read.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlencode

from flask import Flask, redirect, request
from werkzeug.wrappers import Response
from werkzeug.http import parse_cookie

from fireflyhpc.errors import ConfigError

TOKEN_ENV = "FIREFLYHPC_TOKEN"
# WSGI environ key set by fireflyhpc.server.frames for a request under a valid
# frame key (a client cannot set it: header values arrive as HTTP_* keys).
FRAME_ENV = "fireflyhpc.frame"
_MAX_TOKEN = 512

FORBIDDEN_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>fireflyhpc: access token needed</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 3em auto">
<h1>Access token needed</h1>
<p>This fireflyhpc server only answers requests that carry its access token.</p>
<p>Open the full address that <code>fireflyhpc serve</code> (or <code>fireflyhpc
connect</code>) printed when it started: it ends in <code>?token=...</code>.
Scripts can send the header <code>Authorization: Bearer &lt;token&gt;</code>.</p>
</body></html>
"""


def generate_token() -> str:
    """A fresh random token (URL-safe, 256 bits)."""
    return secrets.token_urlsafe(32)


def validate_token(token: str, source: str) -> str:
    """Return the token stripped of surrounding whitespace.

    Raises ConfigError if it is empty, too long, or contains whitespace or
    control characters.
    """
    token = token.strip()
    if not token:
        raise ConfigError(f"the token from {source} is empty")
    if len(token) > _MAX_TOKEN:
        raise ConfigError(f"the token from {source} is longer than {_MAX_TOKEN} characters")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in token):
        raise ConfigError(f"the token from {source} contains whitespace or control characters")
    return token


def read_token_file(path: str | os.PathLike[str]) -> str:
    """Read a token from a file that only its owner (this user) can read.

    Raises ConfigError if the file is missing, is not a regular file, belongs
    to someone else, or is readable or writable by group or others.
    """
    file = Path(path)
    try:
        info = file.stat()
    except OSError as exc:
        raise ConfigError(f"cannot read token file {file}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"token file {file} is not a regular file")
    if info.st_uid != os.geteuid():
        raise ConfigError(f"token file {file} belongs to another user")
    if info.st_mode & 0o077:
        mode = stat.S_IMODE(info.st_mode)
        raise ConfigError(f"token file {file} is accessible by other users (mode {mode:04o})",
                          hint=f"run: chmod 600 {file}")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read token file {file}: {exc}") from None
    return validate_token(text, f"token file {file}")


def resolve_token(token_file: str | None, environ: Mapping[str, str] = os.environ) -> str:
    """The token to use: ``--token-file`` if given, else ``$FIREFLYHPC_TOKEN``,
    else a freshly generated one. Raises ConfigError for a bad file or value,
    ``$FIREFLYHPC_TOKEN`` set but empty included (it does not mean "random")."""
    if token_file is not None:
        return read_token_file(token_file)
    if TOKEN_ENV in environ:
        if not environ[TOKEN_ENV].strip():
            raise ConfigError(f"${TOKEN_ENV} is set but empty",
                              hint="unset it for a new random token")
        return validate_token(environ[TOKEN_ENV], f"${TOKEN_ENV}")
    return generate_token()


@functools.lru_cache(maxsize=16)
def cookie_name(token: str) -> str:
    """Cookie name for this token (a short hash: unique per server, not secret)."""
    return "fireflyhpc_" + hashlib.sha256(token.encode()).hexdigest()[:16]


def _matches(candidate: str | None, token: str) -> bool:
    if not candidate:
        return False
    return hmac.compare_digest(candidate.encode("utf-8", "surrogateescape"),
                               token.encode("utf-8"))


def _bearer(header: str) -> str | None:
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def bearer_matches(header: str | None, token: str) -> bool:
    """True if an Authorization header value is ``Bearer <token>``."""
    return bool(header) and _matches(_bearer(header or ""), token)


def carries_token(environ: Mapping[str, Any], token: str) -> bool:
    """True if the request carries ``token`` in its cookie or a Bearer header, or
    came through a valid frame key (the ``?token=`` first visit is handled by
    :func:`install`'s hook)."""
    if environ.get(FRAME_ENV) is True or bearer_matches(environ.get("HTTP_AUTHORIZATION"),
                                                          token):
        return True
    cookies = environ.get("HTTP_COOKIE")
    return bool(cookies) and _matches(parse_cookie(cookies).get(cookie_name(token)), token)


def _clean_url() -> str:
    """The visited URL without ``token``, relative to itself (right behind any prefix)."""
    args = [(k, v) for k, v in request.args.items(multi=True) if k != "token"]
    last = "./" + request.path.rsplit("/", 1)[1]  # "./": a segment "a:b" is no scheme
    return last + (("?" + urlencode(args)) if args else "")


def _forbidden() -> Response:
    return Response(FORBIDDEN_PAGE, status=403, mimetype="text/html",
                    headers={"Cache-Control": "no-store"})


def install(app: Flask, token: str | None) -> None:
    """Make every request to ``app`` require ``token`` (None: no checks at all)."""
    if token is None:
        return
    name = cookie_name(token)

    @app.before_request
    def _check_token() -> Response | None:
        given = request.args.get("token")
        if given is not None:
            if not _matches(given, token):
                return _forbidden()
            response = redirect(_clean_url(), code=303)
            response.set_cookie(name, token, httponly=True, samesite="Strict", path="/")
            response.headers["Cache-Control"] = "no-store"
            return response
        if carries_token(request.environ, token):
            return None
        return _forbidden()
