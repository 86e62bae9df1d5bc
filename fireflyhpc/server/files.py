"""Safe file lookup and sending: nothing outside a served directory is reachable.

A URL path is refused (``None``, which the app turns into 404) unless it passes
the containment rule that `export` follows too
(:func:`fireflyhpc.datasets.contained_path`): no empty, ``.``/``..`` or hidden
segment, and a ``realpath`` still inside the served directory's own realpath, so
symlinks pointing out are refused. Only regular files are sent: no directory
listings.
"""

from __future__ import annotations

import mimetypes
import os
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from typing import Any, Callable, Iterable, Iterator

from werkzeug.wrappers import Response

from fireflyhpc.datasets import Dataset, contained_path

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


def safe_file(base: str, relpath: str) -> str | None:
    """The realpath of the regular file ``relpath`` below ``base``, or None.

    ``base`` must already be a realpath. The path must pass the containment rule
    shared with `export` (:func:`fireflyhpc.datasets.contained_path`). None means
    "not found" for every kind of refusal, so the response does not tell an
    attacker which one it was.
    """
    real = contained_path(base, relpath)
    if real is None or not os.path.isfile(real):
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

# Bytes per read when the server has no wsgi.file_wrapper, or for a range.
BLOCK_SIZE = 256 * 1024


@dataclass(frozen=True)
class FileAnswer:
    """What to answer for a file: status line, headers, and which bytes of it to send."""

    status: str
    headers: list[tuple[str, str]]
    start: int = 0
    length: int = 0  # bytes of the file to send from ``start`` (0: no body)


def etag_of(st: os.stat_result) -> str:
    """A strong ETag from modification time (ns) and size."""
    return f'"{st.st_mtime_ns:x}-{st.st_size:x}"'


def _etag_listed(header: str, etag: str) -> bool:
    """True if If-None-Match ``header`` lists ``etag`` or is ``*`` (weak comparison)."""
    for item in header.split(","):
        item = item.strip()
        if item == "*" or item.removeprefix("W/") == etag:
            return True
    return False


def _http_time(text: str) -> float | None:
    try:
        return parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def parse_range(header: str, size: int) -> tuple[int, int] | None | bool:
    """Parse a Range header against a file of ``size`` bytes.

    Returns ``(start, length)`` for one satisfiable byte range, False when the
    range cannot be satisfied (416), and None when the header is to be ignored
    (not ``bytes=``, malformed, or several ranges: the whole file is sent, as
    RFC 9110 allows).
    """
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    first, last = first.strip(), last.strip()
    if not dash or not (first or last) or (first and not first.isdigit()) or \
            (last and not last.isdigit()):
        return None
    if not first:  # suffix: the last N bytes
        count = int(last)
        if count == 0 or size == 0:
            return False
        return max(0, size - count), min(count, size)
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        return False
    end = min(end, size - 1)
    return start, end - start + 1


def plan_answer(environ: dict[str, Any], st: os.stat_result, mimetype: str) -> FileAnswer:
    """Decide the answer to a GET or HEAD of a file with status ``st``: 200, 206,
    304 or 416, with ETag/Last-Modified, Range and caching headers. Pure."""
    etag = etag_of(st)
    modified = formatdate(int(st.st_mtime), usegmt=True)
    common = [("ETag", etag), ("Last-Modified", modified), ("Cache-Control", CACHE_CONTROL),
              *SECURITY_HEADERS.items()]
    none_match = environ.get("HTTP_IF_NONE_MATCH")
    if none_match is not None:
        if _etag_listed(none_match, etag):
            return FileAnswer("304 Not Modified", common)
    else:
        since = environ.get("HTTP_IF_MODIFIED_SINCE")
        since_time = _http_time(since) if since else None
        if since_time is not None and int(st.st_mtime) <= since_time:
            return FileAnswer("304 Not Modified", common)
    size = st.st_size
    headers = [("Content-Type", mimetype), ("Accept-Ranges", "bytes"), *common]
    wanted = environ.get("HTTP_RANGE")
    if_range = environ.get("HTTP_IF_RANGE")
    if wanted and if_range and if_range.strip() not in (etag, modified):
        wanted = None  # the client's copy is stale: send it all
    span = parse_range(wanted, size) if wanted else None
    if span is False:
        return FileAnswer("416 Range Not Satisfiable",
                          [("Content-Range", f"bytes */{size}"), ("Content-Length", "0"),
                           *common])
    if isinstance(span, tuple):
        start, length = span
        headers += [("Content-Range", f"bytes {start}-{start + length - 1}/{size}"),
                    ("Content-Length", str(length))]
        return FileAnswer("206 Partial Content", headers, start, length)
    return FileAnswer("200 OK", [*headers, ("Content-Length", str(size))], 0, size)


def serve_file(path: str, environ: dict[str, Any],
               start_response: Callable[..., Any]) -> Iterable[bytes]:
    """A WSGI answer for the resolved file ``path`` (see :func:`plan_answer`).

    A whole file goes through the server's ``wsgi.file_wrapper`` (waitress streams
    it from the open file), so large files are not read into memory. A file that
    vanished or became unreadable since the lookup is a 404.
    """
    try:
        handle = open(path, "rb")  # noqa: SIM115 (closed by the server via the iterable)
    except OSError:
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8"),
                                         *SECURITY_HEADERS.items()])
        return [b"Not Found\n"]
    try:
        st = os.fstat(handle.fileno())
        answer = plan_answer(environ, st, content_type(path))
        start_response(answer.status, answer.headers)
    except BaseException:
        handle.close()
        raise
    if answer.length == 0 or environ.get("REQUEST_METHOD") == "HEAD":
        handle.close()
        return []
    wrapper = environ.get("wsgi.file_wrapper")
    if wrapper is not None and answer.start == 0 and answer.length == st.st_size:
        return wrapper(handle, BLOCK_SIZE)
    return _read_span(handle, answer.start, answer.length)


def _read_span(handle: Any, start: int, length: int) -> Iterator[bytes]:
    try:
        handle.seek(start)
        while length > 0:
            block = handle.read(min(BLOCK_SIZE, length))
            if not block:
                break
            length -= len(block)
            yield block
    finally:
        handle.close()


def send(path: str, environ: dict[str, Any]) -> Response:
    """:func:`serve_file` as a response object, for the Flask routes."""
    return Response.from_app(lambda env, start: serve_file(path, env, start), environ)
