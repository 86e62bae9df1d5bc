"""Wheels made on this machine for a cluster without a package index.

:func:`project_wheel` gives a wheel of the fireflyhpc that is running here: built
with pip from the source tree of an editable or checkout install, or repacked from
the files of a regular install. :func:`download_wheels` has pip fetch the payload's
dependencies as binary wheels for the cluster's Python and platform. Both keep
their results in the user cache, keyed by content, so a second run is instant.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from email.parser import Parser
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import platformdirs

import fireflyhpc
from fireflyhpc.errors import LocalError

log = logging.getLogger(__name__)

DIST_NAME = "fireflyhpc"
# What `fireflyhpc serve` needs on a compute node; the SSH stack stays on the laptop.
PAYLOAD_DEPENDENCIES = frozenset({"flask", "werkzeug", "waitress", "click", "platformdirs",
                                  "psutil", "tomli"})
_SKIP_DIRS = {".git", "__pycache__", "build", "dist", ".pytest_cache", ".mypy_cache", "tests",
              "benchmarks"}
_DIST_INFO_KEEP = ("METADATA", "entry_points.txt", "top_level.txt")


@dataclass(frozen=True)
class ProjectWheel:
    """A wheel of the running fireflyhpc and the requirements its metadata declares."""

    path: Path
    version: str
    requires: tuple[str, ...]
    build: str | None = None  # source digest of a checkout build; None for a release


def cache_dir() -> Path:
    """Where built and downloaded wheels are kept between runs."""
    return Path(platformdirs.user_cache_dir("fireflyhpc")) / "wheels"


def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


# -- the project wheel ---------------------------------------------------------------------

def _distribution() -> importlib.metadata.Distribution | None:
    try:
        return importlib.metadata.distribution(DIST_NAME)
    except importlib.metadata.PackageNotFoundError:
        return None


def source_tree() -> Path | None:
    """The source checkout the running fireflyhpc is imported from, or None.

    Editable installs and bare checkouts import the package from a folder with
    the project's pyproject.toml beside it; a regular install never does.
    """
    package = Path(fireflyhpc.__file__).resolve().parent
    return package.parent if (package.parent / "pyproject.toml").is_file() else None


def _source_files(tree: Path) -> list[str]:
    """Files of ``tree`` a build needs (git's view when it is a repository)."""
    if (tree / ".git").exists() and shutil.which("git"):
        proc = subprocess.run(["git", "-C", str(tree), "ls-files", "-co", "--exclude-standard"],
                              capture_output=True, text=True, timeout=60, check=False)
        if proc.returncode == 0:
            return sorted(name for name in proc.stdout.splitlines()
                          if name.split("/", 1)[0] not in _SKIP_DIRS and (tree / name).is_file())
    found = []
    for root, dirs, files in os.walk(tree):
        dirs[:] = [d for d in dirs if d not in _SKIP_DIRS and not d.endswith(".egg-info")]
        found += [os.path.relpath(os.path.join(root, f), tree) for f in files
                  if not f.endswith((".pyc", ".pyo"))]
    return sorted(found)


def _digest(tree: Path, names: Iterable[str]) -> str:
    h = hashlib.sha256()
    for name in names:
        h.update(name.encode() + b"\0" + (tree / name).read_bytes() + b"\0")
    return h.hexdigest()[:20]


def local_build_id() -> str | None:
    """A digest of the source tree the running fireflyhpc comes from (None: a release).

    Two checkouts at the same version but with different code differ here, so a
    developer's remote venv is refreshed when the code changes.
    """
    tree = source_tree()
    return None if tree is None else _digest(tree, _source_files(tree))


def build_from_source(tree: Path, cache: Path) -> Path:
    """A wheel built by pip from a clean copy of ``tree`` (never writes into ``tree``).

    Raises LocalError if pip fails.
    """
    names = _source_files(tree)
    slot = cache / "project" / _digest(tree, names)
    built = sorted(slot.glob(f"{DIST_NAME}-*.whl"))
    if built:
        return built[-1]
    with tempfile.TemporaryDirectory(prefix="fireflyhpc-src-") as tmp:
        copy = Path(tmp) / "src"
        for name in names:
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(tree / name, copy / name)
        out = Path(tmp) / "out"
        argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
                "--quiet", "-w", str(out), str(copy)]
        _run_pip(argv, f"building the fireflyhpc wheel from {tree}")
        wheels = sorted(out.glob(f"{DIST_NAME}-*.whl"))
        if not wheels:
            raise LocalError(f"pip built no fireflyhpc wheel from {tree}")
        slot.mkdir(parents=True, exist_ok=True)
        final = slot / wheels[0].name
        partial = slot / f".{wheels[0].name}.{os.getpid()}"
        shutil.copy2(wheels[0], partial)
        os.replace(partial, final)  # a concurrent run never sees half a wheel
    _prune(cache / "project", keep=slot)
    return final


def _prune(folder: Path, keep: Path, limit: int = 8) -> None:
    """Drop all but the ``limit`` newest builds in ``folder`` (never ``keep``)."""
    slots = sorted((p for p in folder.iterdir() if p.is_dir() and p != keep),
                   key=lambda p: p.stat().st_mtime, reverse=True)
    for old in slots[limit - 1:]:
        shutil.rmtree(old, ignore_errors=True)


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def repack_installed(dist: importlib.metadata.Distribution, out_dir: Path) -> Path:
    """Rebuild the wheel of a regular install from the files its RECORD lists.

    Compiled files, scripts outside site-packages and installer bookkeeping are
    left out; WHEEL and RECORD are written anew. Raises LocalError if the
    files are not there.
    """
    version = dist.version
    info = f"{DIST_NAME}-{version}.dist-info"
    entries: list[tuple[str, bytes]] = []
    for file in dist.files or ():
        name = str(file).replace("\\", "/")
        top = name.split("/", 1)[0]
        if name.startswith("..") or name.endswith((".pyc", ".pyo")) or "__pycache__" in name:
            continue
        if top.endswith(".dist-info"):
            if name.rsplit("/", 1)[-1] not in _DIST_INFO_KEEP and "/licenses/" not in name:
                continue
            name = f"{info}/{name.split('/', 1)[1]}"
        try:
            entries.append((name, Path(str(file.locate())).read_bytes()))
        except OSError as exc:
            raise LocalError(f"cannot read installed file {name}: {exc.strerror}") from exc
    wheel_meta = ("Wheel-Version: 1.0\nGenerator: fireflyhpc remote-install\n"
                  "Root-Is-Purelib: true\nTag: py3-none-any\n").encode()
    entries.append((f"{info}/WHEEL", wheel_meta))
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{DIST_NAME}-{version}-py3-none-any.whl"
    record = [f"{name},{_record_hash(data)},{len(data)}" for name, data in entries]
    record.append(f"{info}/RECORD,,")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            zf.writestr(name, data)
        zf.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return path


def wheel_metadata(path: Path) -> tuple[str, tuple[str, ...]]:
    """(version, Requires-Dist lines) from a wheel's METADATA."""
    with zipfile.ZipFile(path) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        message = Parser().parsestr(zf.read(meta).decode("utf-8"))
    return str(message["Version"]), tuple(message.get_all("Requires-Dist") or ())


def project_wheel(cache: Path | None = None) -> ProjectWheel:
    """A wheel of the fireflyhpc running here, at exactly its version.

    Raises LocalError if it cannot be built or its version differs from
    ``fireflyhpc.__version__``.
    """
    cache = cache or cache_dir()
    dist = _distribution()
    tree = source_tree()
    build = None
    if tree is not None:
        path = build_from_source(tree, cache)
        build = path.parent.name
    elif dist is not None:
        path = repack_installed(dist, cache / "installed" / dist.version)
    else:
        raise LocalError("cannot find how fireflyhpc was installed here (no metadata, "
                              "no source tree), so there is no wheel to upload",
                              hint="install fireflyhpc with pip, or use --index yes")
    version, requires = wheel_metadata(path)
    if version != fireflyhpc.__version__:
        raise LocalError(f"the wheel built from {tree or 'the installed files'} is version "
                              f"{version}, but fireflyhpc {fireflyhpc.__version__} is running",
                              hint="reinstall fireflyhpc here (pip install -e .) and retry")
    return ProjectWheel(path=path, version=version, requires=requires, build=build)


# -- dependencies ---------------------------------------------------------------------------

def select_requirements(requires: Sequence[str], markers: Mapping[str, str],
                        deps: str = "payload") -> list[str]:
    """The Requires-Dist entries to install remotely (pure).

    Drops extras and entries whose marker is false in the cluster's ``markers``;
    with ``deps="payload"`` keeps only :data:`PAYLOAD_DEPENDENCIES`. Returns
    requirement strings without markers.
    """
    from packaging.requirements import InvalidRequirement, Requirement

    chosen: list[str] = []
    for line in requires:
        try:
            req = Requirement(line)
        except InvalidRequirement as exc:
            raise LocalError(f"bad requirement {line!r} in fireflyhpc's metadata: {exc}") \
                from None
        if req.marker is not None and not req.marker.evaluate({**markers, "extra": ""}):
            continue
        if deps == "payload" and _norm(req.name) not in PAYLOAD_DEPENDENCIES:
            continue
        text = req.name + (f"[{','.join(sorted(req.extras))}]" if req.extras else "") + \
            str(req.specifier)
        if text not in chosen:
            chosen.append(text)
    return chosen


def pip_download_argv(requirements: Sequence[str], target_args: Sequence[str],
                      dest: Path) -> list[str]:
    """The local ``pip download`` command for ``requirements`` (pure)."""
    return [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--quiet",
            "--dest", str(dest), *target_args, *requirements]


def download_wheels(requirements: Sequence[str], target_args: Sequence[str],
                    cache: Path | None = None) -> list[Path]:
    """Binary wheels of ``requirements`` (and their dependencies) for the cluster.

    ``target_args`` comes from :func:`fireflyhpc.remote.target.pip_target_args`.
    Reuses an earlier complete download of the same request. Raises
    LocalError when pip cannot find or fetch them.
    """
    cache = cache or cache_dir()
    key = hashlib.sha256(json.dumps([list(requirements), list(target_args)]).encode())
    slot = cache / "deps" / key.hexdigest()[:20]
    done = slot / "complete.json"
    if done.is_file():
        names = json.loads(done.read_text())
        if all((slot / n).is_file() for n in names):
            return [slot / n for n in names]
    slot.parent.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix=f".{slot.name}.", dir=slot.parent))
    try:
        _run_pip(pip_download_argv(requirements, target_args, fresh),
                 f"downloading wheels of {', '.join(requirements)} for the cluster")
        names = sorted(p.name for p in fresh.glob("*.whl"))
        (fresh / "complete.json").write_text(json.dumps(names))
        shutil.rmtree(slot, ignore_errors=True)  # an incomplete earlier attempt
        try:
            fresh.rename(slot)  # atomic: a concurrent run sees all of it or nothing
        except OSError:  # a concurrent run got there first with the same files
            pass
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
    names = json.loads(done.read_text())
    return [slot / n for n in names]


def _run_pip(argv: list[str], what: str) -> None:
    log.info("%s: %s", what, " ".join(argv))
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=1200,
                              stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        raise LocalError(f"{what}: pip did not finish within 20 minutes") from None
    if proc.returncode != 0:
        tail = " | ".join(line.strip() for line in proc.stderr.strip().splitlines()[-4:])
        raise LocalError(f"{what} failed: {tail or f'pip exited {proc.returncode}'}",
                              hint="this machine needs access to a package index (PyPI); "
                                   "or use --index yes if the cluster has one")
