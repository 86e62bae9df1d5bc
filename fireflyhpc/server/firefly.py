"""Serving Firefly's own web app (from the installed ``firefly`` package).

Firefly's app (its ``index.html`` runs ``runLocal(false)``: no socket.io) reads
``static/data/startup.json`` (``{"0": "data/<name>", ...}``), fetches
``static/<entry>/filenames.json`` for the chosen dataset and then every file as
``static/data/<filenames.json entry>``. Entries are spelled
``<dataset directory name>/<file>``, so they only resolve when the dataset is
served under its own directory name. The routes here serve a generated
startup.json and each dataset's manifest with the first path component of every
entry replaced by the dataset's served name, so renamed datasets (``snap-2``)
load too. Nothing is copied into, or served from, the package's own
``static/data``.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Sequence

from flask import Flask, abort, request
from werkzeug.wrappers import Response

from fireflyhpc.datasets import MANIFEST, Dataset, firefly_startup
from fireflyhpc.server.files import CACHE_CONTROL, data_file, send

log = logging.getLogger(__name__)


def json_response(document: Any) -> Response:
    """A JSON response that browsers may cache but must revalidate."""
    return Response(json.dumps(document, indent=1) + "\n", mimetype="application/json",
                    headers={"Cache-Control": CACHE_CONTROL})


def rename_entry(path: str, name: str) -> str:
    """``<anything>/<rest>`` -> ``<name>/<rest>``; a bare ``file`` -> ``<name>/file``."""
    rest = path.split("/", 1)[1] if "/" in path else path
    return f"{name}/{rest}"


def firefly_manifest(raw: bytes, name: str) -> dict[str, Any]:
    """A dataset's ``filenames.json`` with every file entry renamed to ``name``.

    Raises ValueError if ``raw`` is not a JSON object.
    """
    manifest = json.loads(raw)
    if not isinstance(manifest, dict):
        raise ValueError("filenames.json is not a JSON object")
    out: dict[str, Any] = {}
    for key, files in manifest.items():
        if not isinstance(files, list):
            out[key] = files
            continue
        out[key] = [[rename_entry(entry[0], name), *entry[1:]]
                    if isinstance(entry, list) and entry and isinstance(entry[0], str)
                    else entry for entry in files]
    return out


def add_routes(app: Flask, datasets: Sequence[Dataset]) -> None:
    """Add ``/static/data/...`` (startup.json, manifests, files) to ``app``."""
    by_name = {d.name: d for d in datasets}

    @app.get("/static/data/startup.json")
    def firefly_startup_json() -> Response:
        if not datasets:
            abort(404)  # Firefly then shows its own "no data" picker
        return json_response(firefly_startup(datasets))

    @app.get("/static/data/<path:rest>")
    def firefly_data(rest: str) -> Response:
        name, _, relpath = rest.partition("/")
        if relpath == MANIFEST and name in by_name:
            return _manifest(by_name[name])
        real = data_file(datasets, rest)
        if real is None:
            abort(404)
        return send(real, request.environ)


def _manifest(dataset: Dataset) -> Response:
    path = dataset.root / MANIFEST
    try:
        return json_response(firefly_manifest(path.read_bytes(), dataset.name))
    except (OSError, ValueError) as exc:
        log.warning("cannot read %s: %s", path, exc)
        abort(404)
