"""Static export: the bundled viewer plus datasets, as a site any static host serves.

Layout (the same URLs the payload server uses)::

    TARGET/index.html, app.js, style.css   the viewer
    TARGET/datasets.json                   {"datasets": [{"name", "path": "data/<name>/"}]}
    TARGET/data/<name>/...                 each dataset's files
    TARGET/.nojekyll                       so GitHub Pages serves everything as is

With ``gh_pages`` the target becomes a git repository whose ``gh-pages`` branch
holds one commit of the site, ready for ``git push``; no network is used.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Sequence

from fireflyhpc.datasets import Dataset, datasets_index, discover
from fireflyhpc.errors import ConfigError, FireflyHPCError

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
    if dest.is_symlink() or dest.is_file():
        dest.unlink()
    elif dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(ds.root, dest, ignore=shutil.ignore_patterns(".*"))


def _git(target: Path, *args: str) -> str:
    argv = ["git", *GIT_IDENTITY, *args]
    try:
        done = subprocess.run(argv, cwd=target, capture_output=True, text=True, check=False,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise FireflyHPCError("git is not installed, --gh-pages needs it") from None
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise FireflyHPCError(f"git {args[0]} failed in {target}: {tail[0]}")
    return done.stdout.strip()


def make_gh_pages(target: Path) -> str:
    """Turn ``target`` into a git repo with one commit on branch ``gh-pages``; return its id."""
    _git(target, "init", "-q", "-b", "gh-pages")
    _git(target, "add", "--all", ".")
    _git(target, "commit", "-q", "--no-verify", "-m", "Firefly site exported by fireflyhpc")
    return _git(target, "rev-parse", "HEAD")


def export_site(target: Path, data_dirs: Sequence[Path | str] = (), *, demo: bool = False,
                gh_pages: bool = False, force: bool = False) -> ExportResult:
    """Write a self-contained static site with ``data_dirs``' datasets (and the demo).

    Raises ConfigError for nothing to export, bad data directories, or a target
    that is not empty (without ``force``); FireflyHPCError if git fails.
    """
    dirs: list[Path | str] = list(data_dirs)
    if demo:
        from fireflyhpc.demo import ensure_demo  # generating it is slow: only on demand
        dirs.append(ensure_demo())
    if not dirs:
        raise ConfigError("nothing to export", hint="name a DATA_DIR or use --demo")
    datasets = discover(dirs)
    target = Path(target).expanduser()
    _check_target(target, datasets, force, gh_pages)
    target.mkdir(parents=True, exist_ok=True)
    for name in VIEWER_FILES:
        (target / name).write_bytes(viewer_file(name))
    (target / ".nojekyll").write_bytes(b"")
    (target / "datasets.json").write_text(json.dumps(datasets_index(datasets), indent=1) + "\n",
                                          encoding="utf-8")
    for ds in datasets:
        log.info("copying dataset %s from %s", ds.name, ds.root)
        _copy_dataset(ds, target / "data" / ds.name)
    result = ExportResult(target, datasets)
    if gh_pages:
        result.commit = make_gh_pages(target)
    return result
