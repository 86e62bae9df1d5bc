"""The payload's Flask application, and the URL layout viewers can rely on.

Every URL below needs the access token (see :mod:`fireflyhpc.server.auth`).
Datasets are found and named by :mod:`fireflyhpc.datasets` (shared with static
export, so names and URLs are the same in both).

``/``
    The web app's ``index.html``. The app directory (Firefly's, the bundled
    viewer's, or ``--app PATH``) is served at the root, so its relative URLs
    (``./app.js``, ``static/js/...``) resolve: ``/<path>`` is the app's file.
``/datasets.json``
    ``{"datasets": [{"name": "galaxy", "path": "data/galaxy/"}, ...]}``; each
    ``path`` is relative to the server root, ends in ``/`` and holds a
    ``filenames.json``. Static export writes the same document.
``/data/<name>/<relative path>``
    The files of dataset ``<name>`` (its directory). Entries of
    ``filenames.json`` are spelled ``<directory name>/<file>`` as in Firefly;
    viewers drop the first component and resolve the rest against the
    dataset's ``path``.

With Firefly's own app only (see :mod:`fireflyhpc.server.firefly`):

``/static/data/startup.json``
    Generated: ``{"0": "data/<name>", ...}``, one entry per dataset.
``/static/data/<name>/filenames.json``
    The dataset's manifest, every entry rewritten to ``<name>/<file>``.
``/static/data/<name>/<relative path>``
    The same files as ``/data/<name>/<relative path>``.

``/_frame`` (POST) and ``/_frame/<key>/<any URL above>``
    A notebook frame's ticket and key (:mod:`fireflyhpc.server.frames`): the
    whole layout again under a per-frame path prefix (with ``--app
    firefly-flask``, Firefly's pages and Socket.IO too, but not its routes for
    Python: :data:`fireflyhpc.server.firefly_flask.PYTHON_ONLY`).

Paths that leave a served directory (``..``, encoded or not, symlinks pointing
out, absolute paths, hidden files) and directories give 404: there are no
listings. Responses carry ETag and Last-Modified (304 on a match), honour Range
(206/416), and say ``Cache-Control: private, no-cache``.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable, Sequence

from flask import Flask, abort, request
from werkzeug.wrappers import Response

from fireflyhpc.datasets import Dataset, datasets_index
from fireflyhpc.server import auth, firefly
from fireflyhpc.server.files import SECURITY_HEADERS, data_file, safe_file, send, serve_file
from fireflyhpc.server.frames import FrameGate
from fireflyhpc.server.viewers import FIREFLY, FIREFLY_FLASK, WebApp

log = logging.getLogger(__name__)


def create_app(webapp: WebApp, datasets: Sequence[Dataset], token: str | None) -> Flask:
    """A WSGI app serving ``webapp`` at ``/`` and ``datasets`` under ``/data/``.

    ``token`` None disables authentication (only ever allowed on loopback).
    """
    app = Flask("fireflyhpc.server", static_folder=None)
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False
    datasets = list(datasets)
    auth.install(app, token)

    @app.after_request
    def _headers(response: Response) -> Response:
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        return response

    def _app_file(path: str) -> Response:
        real = safe_file(webapp.root, path)
        if real is None:
            abort(404)
        return send(real, request.environ)

    @app.get("/")
    def index() -> Response:
        return _app_file("index.html")

    @app.get("/datasets.json")
    def datasets_json() -> Response:
        return firefly.json_response(datasets_index(datasets))

    @app.get("/data/<path:rest>")
    def data(rest: str) -> Response:
        real = data_file(datasets, rest)
        if real is None:
            abort(404)
        return send(real, request.environ)

    if webapp.kind in (FIREFLY, FIREFLY_FLASK):
        firefly.add_routes(app, datasets)

    @app.get("/<path:path>")
    def app_file(path: str) -> Response:
        return _app_file(path)

    app.wsgi_app = DataFastPath(app.wsgi_app, datasets, token)  # type: ignore[method-assign]
    if webapp.kind == FIREFLY_FLASK:
        from fireflyhpc.server.firefly_flask import FireflyDispatch, firefly_wsgi

        app.wsgi_app = FireflyDispatch(  # type: ignore[method-assign]
            app.wsgi_app, firefly_wsgi(datasets), token)
    if token is not None:
        app.wsgi_app = FrameGate(app.wsgi_app, token)  # type: ignore[method-assign]
    return app


WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class DataFastPath:
    """Serve authenticated GET/HEAD requests for existing ``/data/`` files
    directly with :func:`serve_file`, skipping Flask's request context.

    The answer is the same as the Flask route's (same lookup, same
    :func:`serve_file`), at a fraction of the CPU per request; anything else (no
    or wrong token, a ``?token=`` visit or any query string, a miss) goes to the
    Flask app, which then answers 303, 403 or 404 as usual.
    """

    def __init__(self, app: WSGIApp, datasets: Sequence[Dataset], token: str | None) -> None:
        self.app = app
        self.datasets = list(datasets)
        self.token = token

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/data/") and environ.get("REQUEST_METHOD") in ("GET", "HEAD") \
                and not environ.get("QUERY_STRING") \
                and (self.token is None or auth.carries_token(environ, self.token)):
            real = data_file(self.datasets, path[len("/data/"):])
            if real is not None:
                return serve_file(real, environ, start_response)
        return self.app(environ, start_response)
