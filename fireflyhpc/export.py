"""Static export: the bundled viewer plus datasets, as a site any static host serves.

Layout (the same URLs the payload server uses)::

    TARGET/index.html, app.js, style.css   the viewer
    TARGET/datasets.json                   {"datasets": [{"name", "path": "data/<name>/"}]}
    TARGET/data/<name>/...                 each dataset's files
    TARGET/.nojekyll                       so GitHub Pages serves everything as is

With ``gh_pages`` the target becomes a git repository whose ``gh-pages`` branch
holds one commit of the site, ready for ``git push``; no network is used.

A dataset is exported as `serve` serves it, by the same containment rule
(:func:`fireflyhpc.datasets.contained_path`): hidden files are left out, links
that stay inside the dataset are followed, and a link that leads out of it stops
the export with an error naming it (nothing outside a dataset is ever copied).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Iterator, Sequence

from fireflyhpc.datasets import (
    Dataset,
    contained_path,
    datasets_index,
    discover,
    visible_name,
)
from fireflyhpc.errors import ConfigError, LocalError

log = logging.getLogger(__name__)

VIEWER_FILES = ("index.html", "app.js", "style.css")
GIT_IDENTITY = ("-c", "user.name=fireflyhpc export", "-c", "user.email=fireflyhpc@localhost",
                "-c", "commit.gpgsign=false")


@dataclass
class ExportResult:
    """What :func:`export_site` wrote: the site directory, its datasets, the commit (if any)."""

    target: Path
    datasets: list[Dataset] = field(default_factory=list)
    commit: str | None = None


def viewer_file(name: str) -> bytes:
    """The bytes of one of the bundled viewer's files."""
    return (resources.files("fireflyhpc") / "data" / "viewer" / name).read_bytes()


def _check_target(target: Path, datasets: Sequence[Dataset], force: bool, gh_pages: bool) -> None:
    if target.exists() and not target.is_dir():
        raise ConfigError(f"export target {str(target)!r} exists and is not a directory")
    if target.is_dir() and any(target.iterdir()) and not force:
        raise ConfigError(f"export target {str(target)!r} is not empty",
                          hint="use --force to write into it anyway")
    if gh_pages and (target / ".git").exists():
        raise ConfigError(f"export target {str(target)!r} is already a git repository",
                          hint="export --gh-pages into a new directory")
    resolved = target.resolve()
    for ds in datasets:
        if resolved == ds.root or ds.root in resolved.parents:
            raise ConfigError(f"export target {str(target)!r} is inside dataset {str(ds.root)!r}")


def _copy_dataset(ds: Dataset, dest: Path) -> None:
    """Copy what `serve` would serve of ``ds`` into ``dest``, following links that
    stay inside the dataset. Raises ConfigError for a link that leaves it."""
    root = str(ds.root)

    def copy_dir(rel: str, ancestors: frozenset[str]) -> None:
        (dest / rel).mkdir(parents=True, exist_ok=True)
        with os.scandir(os.path.join(root, rel)) as entries:
            names = sorted(entry.name for entry in entries)
        for name in names:
            if not visible_name(name):
                continue  # hidden files are neither served nor exported
            relpath = f"{rel}/{name}" if rel else name
            real = contained_path(root, relpath)
            if real is None:
                target = os.path.realpath(os.path.join(root, relpath))
                raise ConfigError(f"dataset {ds.name}: {relpath} is a link to {target}, "
                                  f"outside the dataset {root}; refusing to export it",
                                  hint="remove the link, or copy what it points to into "
                                       "the dataset")
            if os.path.isdir(real):
                if real in ancestors:
                    raise ConfigError(f"dataset {ds.name}: {relpath} links back to "
                                      f"{real}, a folder it is in; refusing to copy "
                                      "it endlessly")
                copy_dir(relpath, ancestors | {real})
            elif os.path.isfile(real):
                shutil.copy2(real, dest / relpath)
            else:
                log.warning("dataset %s: skipping %s (not a regular file or folder)",
                            ds.name, relpath)

    copy_dir("", frozenset({root}))


def _git(target: Path, *args: str) -> str:
    argv = ["git", *GIT_IDENTITY, *args]
    try:
        done = subprocess.run(argv, cwd=target, capture_output=True, text=True, check=False,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise LocalError("git is not installed, --gh-pages needs it") from None
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise LocalError(f"git {args[0]} failed: {tail[0]}")
    return done.stdout.strip()


def make_gh_pages(target: Path) -> str:
    """Turn ``target`` into a git repo with one commit on branch ``gh-pages``; return its id."""
    _git(target, "init", "-q", "-b", "gh-pages")
    _git(target, "add", "--all", ".")
    _git(target, "commit", "-q", "--no-verify", "-m", "Firefly site exported by fireflyhpc")
    return _git(target, "rev-parse", "HEAD")


def export_site(target: Path | str, data_dirs: Sequence[Path | str] = (), *,
                demo: bool = False, gh_pages: bool = False, force: bool = False) -> ExportResult:
    """Write a self-contained static site with ``data_dirs``' datasets (and the demo).

    The site is built in a folder beside ``target`` and moved into place only
    when complete: a failed export leaves ``target`` as it was. Raises
    ConfigError for nothing to export, bad data directories, a link leaving a
    dataset, or a target that is not empty (without ``force``); LocalError if
    a file cannot be read or written, or git fails.
    """
    if not os.fspath(target):
        raise ConfigError("the export target is an empty name", hint="name a directory")
    dirs: list[Path | str] = list(data_dirs)
    if demo:
        from fireflyhpc.demo import ensure_demo  # generating it is slow: only on demand
        dirs.append(ensure_demo())
    if not dirs:
        raise ConfigError("nothing to export", hint="name a DATA_DIR or use --demo")
    datasets = discover(dirs)
    target = Path(target).expanduser()
    _check_target(target, datasets, force, gh_pages)
    result = ExportResult(target, datasets)
    try:
        with _staging(target) as staging:
            _build(staging, datasets)
            if gh_pages:
                result.commit = make_gh_pages(staging)
            _install(staging, target)
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        raise LocalError(f"export to {str(target)!r} failed: "
                         f"{exc.strerror or exc}{where}") from exc
    return result


def _build(site: Path, datasets: Sequence[Dataset]) -> None:
    for name in VIEWER_FILES:
        (site / name).write_bytes(viewer_file(name))
    (site / ".nojekyll").write_bytes(b"")
    (site / "datasets.json").write_text(json.dumps(datasets_index(datasets), indent=1) + "\n",
                                        encoding="utf-8")
    for ds in datasets:
        log.info("copying dataset %s from %s", ds.name, ds.root)
        _copy_dataset(ds, site / "data" / ds.name)


@contextmanager
def _staging(target: Path) -> Iterator[Path]:
    """A new empty folder beside ``target`` (same file system, so it can be renamed
    into place); it and the parent folders made for it are removed on the way out."""
    parent = target.absolute().parent
    made = [p for p in (parent, *parent.parents) if not p.exists()]
    parent.mkdir(parents=True, exist_ok=True)
    staging = parent / f".{target.name}.export-{secrets.token_hex(4)}"
    staging.mkdir()  # the usual mode for a new folder (umask), unlike mkdtemp's 0700
    done = False
    try:
        yield staging
        done = True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not done:
            for folder in made:  # innermost first; only the empty ones we made
                try:
                    folder.rmdir()
                except OSError:
                    break


def _install(staging: Path, target: Path) -> None:
    """Move the built site into ``target``: by one rename when ``target`` is missing
    or empty, else entry by entry (``--force``), replacing what has the same name."""
    if not target.exists() or (target.is_dir() and not any(target.iterdir())):
        os.replace(staging, target)  # a rename can take the place of an empty folder
        return
    for entry in sorted(staging.iterdir()):
        if entry.name == "data":
            (target / "data").mkdir(exist_ok=True)
            moves = [(d, target / "data" / d.name) for d in sorted(entry.iterdir())]
        else:
            moves = [(entry, target / entry.name)]
        for source, dest in moves:
            if dest.is_dir() and not dest.is_symlink():
                shutil.rmtree(dest)
            elif dest.exists() or dest.is_symlink():
                dest.unlink()
            os.replace(source, dest)
