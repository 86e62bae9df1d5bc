"""Firefly's own Flask server (``--app firefly-flask``), wrapped behind the token.

Firefly's Flask server (``firefly.server``: a Flask ``app`` and a Flask-SocketIO
``socketio`` built for eventlet) has what its static app lacks: the Load New
Data picker (``/browse``, the ``native_browse`` and ``load_data_path`` socket
events), data and settings exchanged with Python (``/data_input``,
``/get_settings``, ``/post_settings``, ``/get_selected_data``), separate GUI and
viewer windows (``/gui``, ``/viewer``, ``/combined``), ``/VR`` and ``/stream``.
Its own launcher binds ``0.0.0.0`` with a reloader and checks nobody; here the
same objects are imported and served by the payload instead:

- :class:`FireflyDispatch` sits behind the payload's own gates (the
  :class:`~fireflyhpc.server.frames.FrameGate` and the token of
  :mod:`fireflyhpc.server.auth`). A request goes to Firefly's WSGI app (Socket.IO
  middleware included: its polling requests and websocket upgrades are HTTP
  requests) only when it carries the token; everything else, and the payload's
  own data routes, go to the payload's app, which answers 303, 403 or the data.
- :func:`confine` wraps ``/browse`` and ``load_data_path`` so that they see only
  the served dataset folders (:func:`fireflyhpc.datasets.contained_path`), as
  does ``/userdata/`` (where a loaded folder's files are fetched), and
  turns ``native_browse`` (a folder dialog on the server's display, which could
  pick anything) into a message pointing at the list.
- :func:`prefix_aware_pages` makes Firefly's pages open Socket.IO (and post to
  ``/stream_input``) under the path prefix they were loaded from. Firefly's
  scripts address both from the server's root, which a notebook frame
  (``/_frame/<key>/``, see :mod:`fireflyhpc.server.frames`) cannot use: it has
  no cookie there, and its key lives in the path. The frame gate moves the key
  out of the path before Firefly's app sees ``/socket.io/``, so the frame's
  polling requests and websocket upgrade are let in by its key like any other
  request of the frame, and refused (403) without it. Socket.IO's own origin
  check still applies: the notebook page (another origin) gets no handshake.
- A frame key grants what Firefly's page uses, not the routes meant for Python
  (:data:`PYTHON_ONLY`: data and settings pushed or pulled by a script); those
  need the token itself.
- :class:`GreenLoop` serves it with eventlet's WSGI server, which speaks
  websockets and is what Firefly's handlers are written for (they wait on
  eventlet events and timeouts). Loopback only, no reloader.

Python on the same host sends data with :func:`send_reader`, which posts like
Firefly's ``Reader.sendDataViaFlask`` but with the token from the server registry.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import secrets
import sys
import threading
import warnings
from typing import Any, Callable, Iterable, Sequence
from urllib.parse import parse_qs

from fireflyhpc.datasets import Dataset, contained_path, is_inside
from fireflyhpc.errors import ConfigError, ServerError
from fireflyhpc.server import auth
from fireflyhpc.server.files import SECURITY_HEADERS
from fireflyhpc.server.frames import relative_to

log = logging.getLogger(__name__)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

# Paths the payload's own app answers (its data routes and the generated
# startup.json Firefly's pages read); everything else goes to Firefly's app.
OWN_PREFIXES = ("/data/", "/static/data/")
OWN_PATHS = ("/datasets.json",)

NATIVE_REFUSED = ("A folder dialog is not offered by this server: "
                  "choose one of the served folders from the list.")

# Firefly's routes for Python on the user's side (Reader.sendDataViaFlask, the
# settings and selection exchange); Firefly's pages never request them, so a
# notebook frame's key does not open them.
PYTHON_ONLY = ("/data_input", "/get_settings", "/post_settings", "/get_selected_data")

# Firefly's templates include "_extra_head.html" in their <head> when it exists
# (its hook for site additions). Ours runs before Firefly's scripts and points the
# two URLs they take from the server's root at this page's own prefix instead:
# Socket.IO's path (set on every io() call that names none) and the frames the
# viewer posts to /stream_input. `root` is the app's root relative to the page.
PAGE_HEAD = """<script>
(function () {
  "use strict";
  var root = new URL({{ fireflyhpc_root|tojson }}, location.href).pathname;
  var socketPath = root + {{ fireflyhpc_socket|tojson }};
  var streamInput = root + "stream_input";
  function withPath(lookup) {
    function io(uri, opts) {
      if (uri !== null && typeof uri === "object") { opts = uri; uri = undefined; }
      opts = Object.assign({}, opts);
      if (!opts.path) opts.path = socketPath;
      return lookup(uri, opts);
    }
    Object.assign(io, lookup);
    io.io = io.connect = io;
    return io;
  }
  var current;
  Object.defineProperty(window, "io", {
    configurable: true, enumerable: true,
    get: function () { return current; },
    set: function (value) { current = typeof value === "function" ? withPath(value) : value; }
  });
  var open = XMLHttpRequest.prototype.open;
  XMLHttpRequest.prototype.open = function (method, url) {
    var args = Array.prototype.slice.call(arguments);
    if (args[1] === "/stream_input") args[1] = streamInput;
    return open.apply(this, args);
  };
})();
</script>
"""


def firefly_server() -> Any:
    """The imported ``firefly.server`` module (Flask app and Socket.IO object).

    Raises ConfigError when Firefly (with its Flask dependencies) is not installed.
    """
    try:
        with warnings.catch_warnings():  # eventlet warns on import that it is in bugfix mode
            warnings.simplefilter("ignore", DeprecationWarning)
            from firefly import server
    except ImportError as exc:
        raise ConfigError(f"--app firefly-flask: cannot import Firefly's server ({exc})",
                          hint="pip install firefly, or use --app firefly") from None
    return server


def served_root(datasets: Sequence[Dataset], path: str) -> str | None:
    """The realpath of ``path`` if it is a served dataset folder or lies inside one
    (no hidden segment, no symlink out), else None. Relative paths and ``~`` are
    refused: only absolute paths as the listing gives them count."""
    if not path.startswith("/"):
        return None
    for dataset in datasets:
        root = str(dataset.root)
        if path.rstrip("/") == root:
            return root
        if is_inside(root, os.path.normpath(path)) and ".." not in path.split("/"):
            real = contained_path(root, os.path.relpath(os.path.normpath(path), root))
            if real is not None:
                return real
    return None


def _owning_root(datasets: Sequence[Dataset], real: str) -> str:
    return next(str(d.root) for d in datasets if is_inside(str(d.root), real))


def confine(server: Any, datasets: Sequence[Dataset]) -> None:
    """Restrict Firefly's data picker to ``datasets`` (see the module docstring).

    It changes Firefly's module-level app: call it once per process (the payload
    serves one set of datasets for its whole life)."""
    from flask import abort, request
    from werkzeug.datastructures import ImmutableMultiDict

    app, socketio, namespace = server.app, server.socketio, server.namespace
    original_browse = app.view_functions["browse"]
    shortcuts = [{"label": d.name, "path": str(d.root)} for d in datasets]

    @functools.wraps(original_browse)
    def browse() -> Any:
        asked = request.args.get("path", "").strip()
        real = served_root(datasets, asked) if asked else (
            str(datasets[0].root) if datasets else None)
        if real is None or not os.path.isdir(real):
            return json.dumps({"shortcuts": shortcuts, "native": False, "path": "",
                               "error": "Only the served data folders can be browsed."})
        request.args = ImmutableMultiDict({"path": real})  # type: ignore[misc]
        answer = json.loads(original_browse())
        root = _owning_root(datasets, real)
        prefix = "" if real == root else os.path.relpath(real, root) + "/"
        answer.update(shortcuts=shortcuts, native=False,
                      parent=None if real == root else os.path.dirname(real))
        answer["dirs"] = [d for d in answer.get("dirs", [])
                          if contained_path(root, prefix + d["name"]) is not None]
        answer["files"] = [f for f in answer.get("files", [])
                           if contained_path(root, prefix + f) is not None]
        return json.dumps(answer)

    app.view_functions["browse"] = browse
    original_load = server.load_data_path

    def load_data_path(message: Any) -> Any:
        asked = message.get("path", "") if isinstance(message, dict) else ""
        real = served_root(datasets, str(asked).strip())
        if real is None:
            return server.emit_data_error("Only the served data folders can be loaded.")
        return original_load({**message, "path": real})

    def native_browse() -> Any:
        return server.emit_data_error(NATIVE_REFUSED)

    original_user_file = app.view_functions["serve_user_file"]
    roots = {str(d.root) for d in datasets}

    @functools.wraps(original_user_file)
    def serve_user_file(room: str, filename: str) -> Any:
        # load_data_path serves a dataset's parent folder: only the dataset's own
        # files may be fetched from there (no sibling, no symlink out)
        base = server.user_data_dir.get(room)
        name, _, rest = filename.partition("/")
        root = os.path.join(base, name) if base else ""
        if root not in roots or contained_path(root, rest) is None:
            abort(404)
        return original_user_file(room, filename)

    app.view_functions["serve_user_file"] = serve_user_file
    socketio.on("load_data_path", namespace=namespace)(load_data_path)
    socketio.on("native_browse", namespace=namespace)(native_browse)


def prefix_aware_pages(server: Any) -> None:
    """Make Firefly's pages open Socket.IO, and post streamed frames, under the
    path prefix they were loaded from (see :data:`PAGE_HEAD`): a notebook
    frame's ``/_frame/<key>/``, a proxy's route, or none.

    It changes Firefly's module-level app: call it once per process."""
    from flask import request
    from jinja2 import ChoiceLoader, DictLoader

    app = server.app
    socket_path = app.wsgi_app.engineio_path.lstrip("/")  # "socket.io/"
    app.jinja_loader = ChoiceLoader([DictLoader({"_extra_head.html": PAGE_HEAD}),
                                     app.jinja_loader])

    @app.context_processor
    def _page_root() -> dict[str, str]:
        return {"fireflyhpc_root": relative_to(request.path or "/", "/"),
                "fireflyhpc_socket": socket_path}


class FireflyDispatch:
    """WSGI: authenticated requests to Firefly's app, the rest to the payload's own.

    ``own`` must be the payload's app with :func:`fireflyhpc.server.auth.install`
    applied: it answers ``?token=`` visits (303 and the cookie) and refuses
    requests without the token (403). A notebook frame's key counts as the
    token except for :data:`PYTHON_ONLY`. Firefly's answers get the payload's
    security headers (no Referer, so a frame's key never leaves in one).
    """

    def __init__(self, own: WSGIApp, firefly: WSGIApp, token: str | None) -> None:
        self.own = own
        self.firefly = firefly
        self.token = token

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith(OWN_PREFIXES) or path in OWN_PATHS:
            return self.own(environ, start_response)
        if path in PYTHON_ONLY and auth.FRAME_ENV in environ:
            environ = {k: v for k, v in environ.items() if k != auth.FRAME_ENV}
        if self.token is not None and (
                "token" in parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
                or not auth.carries_token(environ, self.token)):
            return self.own(environ, start_response)

        def with_headers(status: str, headers: list[tuple[str, str]], *rest: Any) -> Any:
            present = {name.lower() for name, _ in headers}
            headers = headers + [(name, value) for name, value in SECURITY_HEADERS.items()
                                 if name.lower() not in present]
            return start_response(status, headers, *rest)

        return self.firefly(environ, with_headers)


def firefly_wsgi(datasets: Sequence[Dataset]) -> WSGIApp:
    """Firefly's Flask app (Socket.IO included), confined to ``datasets``.

    ``/`` is Firefly's combined page (viewer and GUI over Socket.IO: the page the
    Flask features work in), not its static-style default page, which stays at
    ``/default``; so the address ``serve`` and ``connect`` open shows them.
    """
    server = firefly_server()
    server.app.config["SECRET_KEY"] = secrets.token_hex(32)  # Firefly ships a fixed one
    server.app.view_functions["default"] = server.app.view_functions["combined"]
    confine(server, datasets)
    prefix_aware_pages(server)
    return server.app.wsgi_app  # type: ignore[no-any-return]


class GreenLoop:
    """eventlet's WSGI server on a listening socket; same interface as
    :class:`fireflyhpc.server.runner.ServerLoop` (:meth:`end` from any thread)."""

    POLL = 0.2  # seconds between checks for :meth:`end` (a plain thread cannot wake the hub)

    def __init__(self, app: Callable[..., Any], sock: Any) -> None:
        try:
            import eventlet
            import eventlet.wsgi
        except ImportError as exc:
            raise ServerError(f"--app firefly-flask needs eventlet ({exc})") from None
        self._eventlet = eventlet
        self._sock = eventlet.greenio.GreenSocket(sock)
        self._app = app
        self._ended = threading.Event()

    def run(self) -> None:
        """Serve until :meth:`end`.

        Firefly's handlers print progress; that goes to stderr, so stdout keeps
        the one URL line ``serve`` promises (printed before the loop runs).
        """
        eventlet = self._eventlet
        quiet = logging.getLogger("fireflyhpc.server.eventlet")
        with contextlib.redirect_stdout(sys.stderr):
            server = eventlet.spawn(eventlet.wsgi.server, self._sock, self._app, log=quiet,
                                    log_output=False)
            while not self._ended.is_set() and not server.dead:
                eventlet.sleep(self.POLL)
            server.kill()

    def end(self, signum: int | None = None) -> None:
        """Make :meth:`run` return soon."""
        if signum is not None:
            from fireflyhpc.signals import signal_name

            log.info("%s: stopping", signal_name(signum))
        self._ended.set()

    def close(self) -> None:
        """Close the listening socket (open connections end with the process)."""
        self._sock.close()


def send_reader(reader: Any, port: int | None = None, room: str | None = None,
                timeout: float = 60.0) -> None:
    """Send a Firefly ``Reader``'s data to a running ``--app firefly-flask`` server
    of this user on this host, with its token (from the server registry).

    ``port`` picks the server; without it there must be exactly one. Raises
    ServerError when no such server runs, several do and no ``port`` says which,
    or the server refuses the data.
    """
    import urllib.error
    import urllib.request

    from fireflyhpc.server.registry import list_servers

    servers = [e for _, e in list_servers() if port is None or e.port == port]
    if not servers:
        raise ServerError("no fireflyhpc server of yours is running on this host"
                          + (f" on port {port}" if port is not None else ""))
    if len(servers) > 1:
        ports = ", ".join(str(e.port) for e in servers)
        raise ServerError(f"several fireflyhpc servers of yours run on this host (ports {ports}): "
                          "say which with port=")
    entry = servers[0]
    reader.writeToDisk(loud=False, write_to_disk=False, file_extension=".json")
    document = dict(reader.JSON_dict)
    if room is not None:
        document["room"] = room
    # Firefly's /data_input reads a JSON string holding the JSON document.
    body = json.dumps(json.dumps(document)).encode()
    headers = {"Content-Type": "application/json"}
    if entry.token:
        headers["Authorization"] = f"Bearer {entry.token}"
    request = urllib.request.Request(entry.url.rstrip("/") + "/data_input", data=body,
                                     headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            text = answer.read().decode("utf-8", "replace").strip()
    except urllib.error.HTTPError as exc:
        raise ServerError(f"the server at {entry.url} refused the data: HTTP {exc.code}") from None
    except OSError as exc:
        raise ServerError(f"cannot send data to {entry.url}: {exc}") from None
    if text != "Done":
        raise ServerError(f"the server at {entry.url} did not take the data: {text[:200]}")
