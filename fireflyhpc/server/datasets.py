"""Which directories are served, under which names, and which datasets they hold.

A *dataset* is a directory that contains ``filenames.json`` (Firefly's manifest).
Each DATA_DIR given to the server becomes one :class:`DataRoot`, mounted at
``/data/<name>/`` where ``<name>`` is the directory's basename made URL-safe and
unique (``galaxy``, ``galaxy-2``, ...):

- a DATA_DIR that is itself a dataset is mounted as a virtual directory holding
  just that one dataset under its real basename: ``/data/<name>/<basename>/...``;
- any other DATA_DIR is mounted as is, and each immediate subdirectory that is a
  dataset is offered: ``/data/<name>/<sub>/...``.

Either way every dataset lives at ``data/<name>/<sub>/`` and its parent URL
``data/<name>/`` contains it under its real directory name. That matters because
Firefly's ``filenames.json`` names its files relative to the dataset's *parent*
(``"<basename>/Gas000.ffly"``), so a viewer resolves those entries against
``data/<name>/`` and finds the right files whichever way the data was mounted.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import quote

MANIFEST = "filenames.json"


@dataclass(frozen=True)
class DataRoot:
    """One served DATA_DIR: its URL name, its real directory, and, when the
    directory is itself a dataset, the single child name it appears under."""

    name: str
    directory: str  # realpath
    only_child: str | None = None

    def datasets(self) -> list[tuple[str, str]]:
        """(sub, realpath) of every dataset under this root, sorted by name."""
        if self.only_child is not None:
            return [(self.only_child, self.directory)]
        found = []
        try:
            entries = sorted(os.scandir(self.directory), key=lambda e: e.name)
        except OSError:
            return []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            real = os.path.realpath(entry.path)
            if os.path.isdir(real) and _inside(self.directory, real) \
                    and os.path.isfile(os.path.join(real, MANIFEST)):
                found.append((entry.name, real))
        return found


@dataclass(frozen=True)
class Dataset:
    """A dataset as offered to viewers: display name and relative URL path."""

    name: str
    path: str  # "data/<name>/<sub>/", URL-quoted, relative to the server root
    root: str
    sub: str
    directory: str


def _inside(root: str, path: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _url_name(basename: str) -> str:
    name = _UNSAFE.sub("_", basename).strip("._") or "data"
    return name


def make_roots(directories: Iterable[str | os.PathLike[str]]) -> list[DataRoot]:
    """Mount each directory under a unique, URL-safe name (in the given order).

    Raises nothing; callers check that the directories exist beforehand.
    """
    roots: list[DataRoot] = []
    used: set[str] = set()
    for directory in directories:
        real = os.path.realpath(os.fspath(directory))
        base = os.path.basename(real) or "root"
        name = _url_name(base)
        candidate, n = name, 1
        while candidate in used:
            n += 1
            candidate = f"{name}-{n}"
        used.add(candidate)
        only = base if os.path.isfile(os.path.join(real, MANIFEST)) else None
        roots.append(DataRoot(candidate, real, only))
    return roots


def list_datasets(roots: Iterable[DataRoot]) -> list[Dataset]:
    """Every dataset under the roots, in mount order then name order."""
    result = []
    for root in roots:
        for sub, real in root.datasets():
            display = root.name if root.only_child is not None else f"{root.name}/{sub}"
            path = f"data/{quote(root.name)}/{quote(sub)}/"
            result.append(Dataset(display, path, root.name, sub, real))
    return result


def datasets_document(datasets: Iterable[Dataset]) -> dict[str, Any]:
    """The ``/datasets.json`` document: ``{"datasets": [{"name", "path"}]}``."""
    return {"datasets": [{"name": d.name, "path": d.path} for d in datasets]}


def firefly_startup(datasets: Iterable[Dataset]) -> dict[str, str]:
    """Firefly's ``startup.json``: ``{"0": "data/<name>/<sub>", ...}``.

    Firefly's app fetches it from ``static/data/startup.json`` and then each
    dataset from ``static/<entry>/filenames.json``.
    """
    return {str(i): d.path.rstrip("/") for i, d in enumerate(datasets)}


def firefly_manifest(raw: bytes, dataset: Dataset) -> dict[str, Any]:
    """Rewrite a dataset's ``filenames.json`` for Firefly's own app.

    Firefly fetches every file as ``static/data/<entry>``. Entries in Firefly's
    convention are relative to the dataset's parent (``<sub>/file``) and become
    ``<name>/<sub>/file``; entries relative to the dataset itself (``file``,
    when that file exists there) become ``<name>/<sub>/file`` too.

    Raises ValueError if ``raw`` is not a JSON object.
    """
    manifest = json.loads(raw)
    if not isinstance(manifest, dict):
        raise ValueError("filenames.json is not a JSON object")
    out: dict[str, Any] = {}
    for key, files in manifest.items():
        if isinstance(files, list):
            out[key] = [_rewrite_entry(entry, dataset) for entry in files]
        else:
            out[key] = files
    return out


def _rewrite_entry(entry: Any, dataset: Dataset) -> Any:
    if isinstance(entry, list) and entry and isinstance(entry[0], str):
        return [_rewrite_path(entry[0], dataset), *entry[1:]]
    return entry


def _rewrite_path(path: str, dataset: Dataset) -> str:
    prefix = dataset.sub + "/"
    if not path.startswith(prefix) and os.path.isfile(os.path.join(dataset.directory, path)):
        path = prefix + path
    return f"{dataset.root}/{path}"
