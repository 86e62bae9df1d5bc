"""Safe file lookup and sending: nothing outside a served directory is reachable.

Every URL path is split into segments and refused (``None``, which the app turns
into 404) when a segment is empty, ``.``/``..``, hidden (starts with a dot) or
contains a NUL byte; the joined path is then resolved with ``realpath`` and must
still lie inside the served directory's own realpath, so symlinks pointing out
are refused too. Only regular files are sent: no directory listings.
"""

from __future__ import annotations

import mimetypes
import os
from typing import Any, Iterable

from werkzeug.exceptions import NotFound, RequestedRangeNotSatisfiable
from werkzeug.utils import send_file
from werkzeug.wrappers import Response

from fireflyhpc.datasets import Dataset

# Types browsers and viewers rely on; everything else comes from `mimetypes`.
_TYPES = {
    ".json": "application/json",
    ".ffly": "application/octet-stream",
    ".fftree": "application/octet-stream",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".html": "text/html",
    ".glsl": "text/plain",
    ".wasm": "application/wasm",
}

# Cache, but revalidate (cheap with ETag/304), and never in a shared cache.
CACHE_CONTROL = "private, no-cache"


def _segments(relpath: str) -> list[str] | None:
    if not relpath or "\x00" in relpath or relpath.startswith("/"):
        return None
    parts = relpath.split("/")
    for part in parts:
        if part in ("", ".", "..") or part.startswith("."):
            return None
    return parts


def _inside(root: str, path: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def safe_file(base: str, relpath: str) -> str | None:
    """The realpath of the regular file ``relpath`` below ``base``, or None.

    ``base`` must already be a realpath. None means "not found" for every kind
    of refusal, so the response does not tell an attacker which one it was.
    """
    parts = _segments(relpath)
    if parts is None:
        return None
    real = os.path.realpath(os.path.join(base, *parts))
    if not _inside(base, real) or not os.path.isfile(real):
        return None
    return real


def data_file(datasets: Iterable[Dataset], rest: str) -> str | None:
    """Resolve ``<name>/<relative path>`` (the part after ``/data/``) to a file."""
    name, _, relpath = rest.partition("/")
    for dataset in datasets:
        if dataset.name == name:
            return safe_file(str(dataset.root), relpath)
    return None


def content_type(path: str) -> str:
    """The Content-Type to send for ``path``."""
    ext = os.path.splitext(path)[1].lower()
    if ext in _TYPES:
        return _TYPES[ext]
    guessed, _ = mimetypes.guess_type(path)
    return guessed or "application/octet-stream"


SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def send(path: str, environ: dict[str, Any]) -> Response:
    """Send a resolved file with ETag, Last-Modified, 304 and Range (206/416).

    The body goes through the server's ``wsgi.file_wrapper`` (waitress streams
    it from the open file), so large files are not read into memory. A file
    that vanished or became unreadable since the lookup is a 404.
    """
    try:
        response = send_file(path, environ, mimetype=content_type(path), conditional=True,
                             etag=True, max_age=None)
    except RequestedRangeNotSatisfiable as exc:  # 416, with Content-Range: bytes */size
        response = exc.get_response(environ)
    except OSError:  # removed or made unreadable since it was looked up
        response = NotFound().get_response(environ)
    response.headers["Cache-Control"] = CACHE_CONTROL
    response.headers.update(SECURITY_HEADERS)
    return response
