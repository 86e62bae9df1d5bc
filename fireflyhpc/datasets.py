"""Find Firefly datasets in the directories the user names, and describe them.

A *dataset* is a directory that holds a ``filenames.json`` (plus the files it
lists). A directory given on the command line is either a dataset itself or a
directory whose subdirectories (up to ``MAX_DEPTH`` levels down) are datasets.

Both the payload server and the static export use this module, so a dataset has
the same name and the same URL in both:

- every dataset is reachable under ``data/<name>/`` relative to the viewer, and
  the server/export maps that prefix to :attr:`Dataset.root`;
- ``datasets.json`` (see :func:`datasets_index`) lists them for the viewer as
  ``{"datasets": [{"name": ..., "path": "data/<name>/"}]}``.

The name is the dataset directory's own name where that is unique, because
Firefly's ``filenames.json`` spells file paths as ``<directory name>/<file>``
and Firefly's web app resolves them against ``data/``.  Clashing names get a
numeric suffix (``snap``, ``snap-2``...); the bundled viewer copes with that,
Firefly's own web app may not.

What of a dataset may leave this machine is decided here too, once, for both:
:func:`contained_path` is the containment rule (no hidden names, nothing that
resolves outside the dataset's own directory, symlinks followed first).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable
from urllib.parse import quote

from fireflyhpc.errors import ConfigError

MANIFEST = "filenames.json"
MAX_DEPTH = 3
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Dataset:
    """One dataset: its unique ``name``, its directory, its URL path.

    ``url_path`` is relative to the viewer and ends in ``/`` (``data/<name>/``);
    ``root`` is the directory whose files are served under that path.
    """

    name: str
    root: Path
    url_path: str


def visible_name(part: str) -> bool:
    """True for a path segment that may be served or exported: not empty, not
    ``.``/``..``, not hidden (a leading dot), no NUL byte."""
    return part not in ("", ".", "..") and not part.startswith(".") and "\x00" not in part


def is_inside(root: str, path: str) -> bool:
    """True if ``path`` is ``root`` or lies below it (both realpaths)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def contained_path(root: str, relpath: str) -> str | None:
    """The realpath of ``relpath`` below the directory ``root``, or None if it may not leave.

    ``root`` must be a realpath (a :attr:`Dataset.root`). ``relpath`` is split on
    ``/``; None when it is absolute, or a segment is not a :func:`visible_name`,
    or the path, with every symlink on the way followed, resolves outside
    ``root``. The one containment rule of `serve` and `export`.
    """
    if not relpath or relpath.startswith("/"):
        return None
    parts = relpath.split("/")
    if not all(visible_name(part) for part in parts):
        return None
    real = os.path.realpath(os.path.join(root, *parts))
    return real if is_inside(root, real) else None


def is_dataset(path: Path) -> bool:
    """True if ``path`` is a directory with a ``filenames.json`` file in it."""
    return (path / MANIFEST).is_file()


def _find_below(top: Path, depth: int) -> list[Path]:
    """Dataset directories below ``top`` (not ``top`` itself), sorted, bounded depth."""
    found: list[Path] = []
    if depth <= 0:
        return found
    try:
        children = sorted(p for p in top.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return found
    for child in children:
        if is_dataset(child):
            found.append(child)
        else:
            found.extend(_find_below(child, depth - 1))
    return found


def _safe_name(raw: str) -> str:
    name = _UNSAFE.sub("-", raw).strip(".-")
    return name or "dataset"


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}-{n}"
    taken.add(candidate)
    return candidate


def discover(data_dirs: Iterable[os.PathLike[str] | str]) -> list[Dataset]:
    """Return the datasets in ``data_dirs``, in order, each with a unique name.

    Each entry must be a dataset or contain at least one dataset (searched up
    to ``MAX_DEPTH`` directory levels down, hidden directories skipped), and each
    dataset's ``filenames.json`` must be a JSON object of lists. Raises
    :class:`ConfigError` (one line, naming the path) for an empty name, a
    missing or unreadable path, a path that is not a directory, a directory with
    no dataset in it, or a malformed ``filenames.json``.
    """
    taken: set[str] = set()
    result: list[Dataset] = []
    seen_roots: set[Path] = set()
    for entry in data_dirs:
        if not os.fspath(entry):
            raise ConfigError("a data directory is an empty name", hint="name a directory")
        top = Path(entry).expanduser()
        try:
            roots = _dataset_roots(top)
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename and exc.filename != str(top) else ""
            raise ConfigError(f"cannot read data directory {str(top)!r}: "
                              f"{exc.strerror or exc}{where}") from None
        for root in roots:
            resolved = root.resolve()
            if resolved in seen_roots:
                continue
            seen_roots.add(resolved)
            name = _unique(_safe_name(resolved.name), taken)
            result.append(Dataset(name, resolved, f"data/{quote(name)}/"))
    return result


def _dataset_roots(top: Path) -> list[Path]:
    """The dataset directories ``top`` names, their manifests checked."""
    from fireflyhpc.fireflydata.dataset import read_manifest

    try:
        top.stat()
    except (FileNotFoundError, NotADirectoryError):
        raise ConfigError(f"data directory {str(top)!r} does not exist") from None
    if not top.is_dir():
        raise ConfigError(f"data directory {str(top)!r} is not a directory")
    roots = [top] if is_dataset(top) else _find_below(top, MAX_DEPTH)
    if not roots:
        raise ConfigError(f"no Firefly dataset in {str(top)!r}",
                          hint=f"a dataset is a directory with a {MANIFEST} file")
    for root in roots:
        read_manifest(root / MANIFEST)
    return roots


def datasets_index(datasets: Iterable[Dataset]) -> dict[str, list[dict[str, str]]]:
    """The content of ``datasets.json``: ``{"datasets": [{"name", "path"}, ...]}``."""
    return {"datasets": [{"name": d.name, "path": d.url_path} for d in datasets]}


def firefly_startup(datasets: Iterable[Dataset]) -> dict[str, str]:
    """The content of Firefly's own ``startup.json`` for these datasets.

    Firefly's web app expects ``{"0": "data/<name>", "1": ...}`` (no trailing
    slash) and fetches ``<entry>/filenames.json`` relative to its ``static/``.
    """
    return {str(i): d.url_path.rstrip("/") for i, d in enumerate(datasets)}
