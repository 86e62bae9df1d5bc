"""The payload's Flask application, and the URL layout viewers can rely on.

Every URL below needs the access token (see :mod:`fireflyhpc.server.auth`).

``/``
    The web app's ``index.html``. The app directory (Firefly's, the bundled
    viewer's, or ``--app PATH``) is served at the root, so its relative URLs
    (``./app.js``, ``static/js/...``) resolve: ``/<path>`` is the app's file.
``/datasets.json``
    ``{"datasets": [{"name": "galaxy", "path": "data/galaxy/galaxy/"}, ...]}``;
    each ``path`` is relative to the server root, ends in ``/`` and holds a
    ``filenames.json``. Static export writes the same document.
``/data/<name>/<relative path>``
    Files of the DATA_DIR mounted as ``<name>`` (see
    :mod:`fireflyhpc.server.datasets` for how datasets are mounted; entries
    of ``filenames.json`` resolve against the dataset's parent,
    ``data/<name>/``, as in Firefly).

With Firefly's own app only (it reads ``static/data/startup.json`` and then
fetches every file as ``static/data/<filenames.json entry>``):

``/static/data/startup.json``
    Generated: ``{"0": "data/<name>/<sub>", ...}``, one entry per dataset.
``/static/data/<name>/<sub>/filenames.json``
    The dataset's manifest, entries rewritten to ``<name>/<sub>/<file>``.
``/static/data/<name>/<relative path>``
    The same files as ``/data/<name>/<relative path>``.

Nothing of the installed ``firefly`` package's own ``static/data`` is served,
and nothing is written into site-packages. Paths that leave a served directory
(``..``, encoded or not, symlinks pointing out, absolute paths, hidden files)
and directories give 404: there are no listings. Responses carry ETag and
Last-Modified (304 on a match), honour Range (206/416), and say
``Cache-Control: private, no-cache``.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Sequence

from flask import Flask, Response, abort

from fireflyhpc.server import auth
from fireflyhpc.server.datasets import (MANIFEST, DataRoot, datasets_document,
                                        firefly_manifest, firefly_startup, list_datasets)
from fireflyhpc.server.files import CACHE_CONTROL, data_file, safe_file, send
from fireflyhpc.server.viewers import FIREFLY, WebApp

log = logging.getLogger(__name__)


def _json(document: Any) -> Response:
    body = json.dumps(document, indent=1, sort_keys=False) + "\n"
    return Response(body, mimetype="application/json",
                    headers={"Cache-Control": CACHE_CONTROL})


def create_app(webapp: WebApp, roots: Sequence[DataRoot], token: str | None) -> Flask:
    """A WSGI app serving ``webapp`` at ``/`` and ``roots`` under ``/data/``.

    ``token`` None disables authentication (only ever allowed on loopback).
    """
    app = Flask("fireflyhpc.server", static_folder=None)
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False
    roots = list(roots)
    auth.install(app, token)

    @app.after_request
    def _headers(response: Response) -> Response:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response

    def _app_file(path: str) -> Response:
        real = safe_file(webapp.root, path)
        if real is None:
            abort(404)
        return send(real)

    @app.get("/")
    def index() -> Response:
        return _app_file("index.html")

    @app.get("/datasets.json")
    def datasets() -> Response:
        return _json(datasets_document(list_datasets(roots)))

    @app.get("/data/<path:rest>")
    def data(rest: str) -> Response:
        real = data_file(roots, rest)
        if real is None:
            abort(404)
        return send(real)

    if webapp.kind == FIREFLY:
        _add_firefly_routes(app, roots)

    @app.get("/<path:path>")
    def app_file(path: str) -> Response:
        return _app_file(path)

    return app


def _add_firefly_routes(app: Flask, roots: list[DataRoot]) -> None:
    @app.get("/static/data/startup.json")
    def startup() -> Response:
        found = list_datasets(roots)
        if not found:
            abort(404)  # Firefly then offers its own "no data" picker
        return _json(firefly_startup(found))

    @app.get("/static/data/<path:rest>")
    def firefly_data(rest: str) -> Response:
        if rest.endswith("/" + MANIFEST):
            for dataset in list_datasets(roots):
                if rest == f"{dataset.root}/{dataset.sub}/{MANIFEST}":
                    return _firefly_manifest(dataset)
        real = data_file(roots, rest)
        if real is None:
            abort(404)
        return send(real)


def _firefly_manifest(dataset: Any) -> Response:
    path = os.path.join(dataset.directory, MANIFEST)
    try:
        with open(path, "rb") as handle:
            return _json(firefly_manifest(handle.read(), dataset))
    except (OSError, ValueError) as exc:
        log.warning("cannot read %s: %s", path, exc)
        abort(404)
