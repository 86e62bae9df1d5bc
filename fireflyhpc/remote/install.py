"""`fireflyhpc remote-install`: the same fireflyhpc in a venv in the user's cluster home.

The venv is made with the cluster's own ``python3`` (``--without-pip``, so no
ensurepip is needed) and bootstrapped with a pip wheel sent from here. Packages
come from the cluster's package index, or, where it has none, as wheels built or
downloaded on this machine and uploaded over SSH. Only what the payload server
needs is installed (fireflyhpc itself with ``--no-deps``, plus its web stack),
unless ``deps="all"``.

A marker file in the venv records what was installed; a second run with the same
version only checks that the venv still works. Concurrent installs into the same
prefix are serialized by a lock directory next to it.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import re
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Sequence

import psutil

import fireflyhpc
from fireflyhpc.errors import ConfigError, FireflyHPCError, RemoteCommandError
from fireflyhpc.remote import target as tgt
from fireflyhpc.remote import wheels as wh
from fireflyhpc.remote.pipsteps import STAGE, cleanup, pip, upload

log = logging.getLogger(__name__)

MARKER = "fireflyhpc-install.json"
MARKER_FORMAT = 1
LOCK_STALE_MINUTES = 15
LOCK_WAIT_SECONDS = 900.0
INDEX_MODES = ("auto", "yes", "no")
DEPS_MODES = ("payload", "all")
_VERSION_LINE = re.compile(r"fireflyhpc, version (\S+)")
# pip reads no config file: an upload install must see only the uploaded wheels.


@dataclass(frozen=True)
class InstallRequest:
    """What to install where; None means the default."""

    python: str = "python3"
    prefix: str | None = None
    index: str = "auto"  # auto | yes (the cluster's index) | no (upload wheels)
    deps: str = "payload"  # payload | all
    force: bool = False
    setup: Sequence[str] = ()  # the profile's environment setup lines
    firefly: str | None = None  # Firefly too: "" any version, else that version


@dataclass(frozen=True)
class RemoteInstall:
    """The result: the interpreter to put in the cluster profile, and what happened."""

    python_path: str
    version: str
    prefix: str
    changed: bool  # False: it was already there
    mode: str = "present"  # upload | index | present
    seconds: float = 0.0
    base_python: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)
    firefly: str | None = None  # the Firefly version there, when asked for
    firefly_changed: bool = False


Say = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


# -- small remote helpers (argv lists only; quoting happens in the SSH layer) ------------------

def _exists(conn: tgt.Runs, path: str) -> bool:
    return conn.run(["test", "-e", path], check=False).exit_code == 0


def read_marker(conn: tgt.Runs, prefix: str) -> dict[str, Any] | None:
    """The install marker in ``prefix`` as a dict, or None if absent or unreadable."""
    result = conn.run(["cat", "--", posixpath.join(prefix, MARKER)], check=False)
    if result.exit_code != 0:
        return None
    try:
        data = json.loads(result.stdout)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def installed_version(conn: tgt.Runs, python: str, setup: Sequence[str] = ()) -> str | None:
    """What ``python -m fireflyhpc --version`` reports on the cluster (None if it fails)."""
    return _ask_version(conn, python, setup)[1]


def _ask_version(conn: tgt.Runs, python: str, setup: Sequence[str] = ()) -> tuple[Any, str | None]:
    result = conn.run(tgt.with_setup(setup, [python, "-m", "fireflyhpc", "--version"]),
                      check=False, timeout=120)
    found = _VERSION_LINE.search(result.stdout) if result.exit_code == 0 else None
    return result, found.group(1) if found else None


def marker_text(version: str, state: str, mode: str, deps: str, python: str,
                build: str | None = None) -> str:
    """The marker file's JSON (pure)."""
    return json.dumps({"format": MARKER_FORMAT, "tool": "fireflyhpc remote-install",
                       "version": version, "build": build, "state": state, "mode": mode,
                       "deps": deps, "python": python,
                       "written": datetime.now(timezone.utc).isoformat(timespec="seconds")},
                      indent=1) + "\n"


class _Lock:
    """A lock directory ``PATH`` on the cluster (mkdir is atomic, on NFS too).

    It holds an ``owner`` file (this machine's name and pid), so a lock left by a
    crashed run from this machine is taken over at once; other stale locks after
    :data:`LOCK_STALE_MINUTES`.
    """

    def __init__(self, conn: tgt.Runs, path: str, say: Say, wait: float) -> None:
        self.conn, self.path, self.say, self.wait = conn, path, say, wait
        self.owner = f"{socket.gethostname()} {os.getpid()}"

    def __enter__(self) -> "_Lock":
        deadline = time.monotonic() + self.wait
        told = False
        argv = ["mkdir", "--", self.path]
        vanished = False  # the holder let go between our mkdir and our look
        while (made := self.conn.run(argv, check=False)).exit_code != 0:
            if self._stale():
                log.warning("taking over a stale install lock %s", self.path)
                self.conn.run(["rm", "-rf", "--", self.path], check=False)
                continue
            if not _exists(self.conn, self.path):
                if not vanished:
                    vanished = True
                    continue
                raise RemoteCommandError(argv, made.exit_code, made.stderr,
                                         host=made.host or None,
                                         hint="cannot create the install lock: check that "
                                              "the prefix's parent directory is writable")
            vanished = False
            if time.monotonic() > deadline:
                raise RemoteCommandError(argv, made.exit_code, made.stderr,
                                         host=made.host or None,
                                         hint=f"another remote-install holds {self.path}: wait "
                                              "for it, or remove it if none runs")
            if not told:
                self.say(f"waiting for another remote-install ({self.path})")
                told = True
            time.sleep(1.0)
        self.conn.write_file(posixpath.join(self.path, "owner"), self.owner + "\n")
        return self

    def _stale(self) -> bool:
        old = self.conn.run(["find", self.path, "-maxdepth", "0", "-mmin",
                             f"+{LOCK_STALE_MINUTES}"], check=False).stdout.strip()
        if old:
            return True
        owner = self.conn.run(["cat", "--", posixpath.join(self.path, "owner")],
                              check=False).stdout.split()
        if len(owner) == 2 and owner[0] == socket.gethostname() and owner[1].isdigit():
            return not psutil.pid_exists(int(owner[1]))
        return False

    def __exit__(self, *exc: object) -> None:
        try:
            self.conn.run(["rm", "-rf", "--", self.path], check=False)
        except FireflyHPCError as err:  # the connection died: the lock goes stale
            log.warning("could not remove the install lock %s: %s", self.path, err)


# -- the steps --------------------------------------------------------------------------

def _check_replaceable(conn: tgt.Runs, prefix: str, marker: dict[str, Any] | None,
                       force: bool) -> None:
    """Refuse to wipe a directory remote-install did not make (unless a venv and --force)."""
    if marker is not None or not _exists(conn, prefix):
        return
    empty = conn.run(["find", prefix, "-maxdepth", "0", "-empty"], check=False).stdout.strip()
    if empty:
        return
    if force and _exists(conn, posixpath.join(prefix, "pyvenv.cfg")):
        return
    raise ConfigError(f"{prefix} exists on the cluster and was not made by fireflyhpc "
                      "remote-install; refusing to replace it",
                      hint="pass another --prefix (or --force if it is a venv you want replaced)")


def _create_venv(conn: tgt.Runs, req: InstallRequest, prefix: str) -> None:
    argv = tgt.with_setup(req.setup, [req.python, "-m", "venv", "--clear", "--without-pip",
                                      prefix])
    result = conn.run(argv, check=False, timeout=300)
    if result.exit_code != 0:
        raise RemoteCommandError([req.python, "-m", "venv", "--without-pip", prefix],
                                 result.exit_code, result.stderr, host=result.host or None,
                                 hint="the cluster's Python cannot make a venv: ask for the "
                                      "python3-venv package, or pick another --python")


def _index_has(conn: tgt.Runs, python: str, pip: Sequence[str], stage: str,
               version: str) -> bool:
    """Can the cluster's own package index deliver fireflyhpc==version? (quick, no retries)"""
    argv = [python, *pip, "download", "--no-deps", "--retries", "0", "--timeout", "10",
            "--quiet", "--dest", posixpath.join(stage, "probe"), f"fireflyhpc=={version}"]
    result = conn.run(argv, check=False, timeout=120,
                      env={"PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    log.info("cluster package index %s fireflyhpc==%s", "has" if result.ok else "lacks", version)
    return result.exit_code == 0


def _install_packages(conn: tgt.Runs, req: InstallRequest, target: tgt.RemotePython, prefix: str,
                      say: Say) -> str:
    """pip-install into the fresh venv at ``prefix``; return the mode used (index/upload)."""
    python = posixpath.join(prefix, "bin", "python")
    stage = posixpath.join(prefix, STAGE)
    target_args = tgt.pip_target_args(target)
    say("fetching pip for the cluster's Python")
    pip_wheels = wh.download_wheels(["pip"], target_args)
    (pip_remote,) = upload(conn, [w for w in pip_wheels if w.name.startswith("pip-")][:1],
                            stage, say)
    bootstrap = [posixpath.join(pip_remote, "pip")]  # pip runs from its own wheel
    mode = req.index
    if mode == "auto":
        say("asking the cluster's package index for fireflyhpc")
        mode = "yes" if _index_has(conn, python, bootstrap, stage, fireflyhpc.__version__) \
            else "no"
    if mode == "yes":
        project = f"fireflyhpc=={fireflyhpc.__version__}"
        reqs = wh.select_requirements(_installed_requires(), target.markers, req.deps)
        say("installing from the cluster's package index")
        pip(conn, python, bootstrap, ["pip", *reqs], isolated=False, what="installing deps")
        deps = [] if req.deps == "all" else ["--no-deps"]
        pip(conn, python, ["-m", "pip"], [*deps, project], isolated=False, what=project)
        return "index"
    say("building the fireflyhpc wheel here")
    project_whl = wh.project_wheel()
    reqs = wh.select_requirements(project_whl.requires, target.markers, req.deps)
    say(f"fetching wheels for Python {target.version_text} ({target.platform}) here")
    dep_wheels = wh.download_wheels(reqs, target_args) if reqs else []
    upload(conn, [*dep_wheels, project_whl.path], stage, say)
    local = ["--no-index", "--find-links", stage]
    say("installing on the cluster")
    pip(conn, python, bootstrap, [*local, "pip", *reqs], isolated=True, what="installing deps")
    deps = [] if req.deps == "all" else ["--no-deps"]
    pip(conn, python, ["-m", "pip"], [*local, *deps,
                                       posixpath.join(stage, project_whl.path.name)],
         isolated=True, what="installing fireflyhpc")
    return "upload"


def _installed_requires() -> tuple[str, ...]:
    import importlib.metadata

    try:
        return tuple(importlib.metadata.requires("fireflyhpc") or ())
    except importlib.metadata.PackageNotFoundError:
        return ()


def remote_install(conn: tgt.Runs, req: InstallRequest, say: Say = _quiet) -> RemoteInstall:
    """Make sure ``conn``'s host has fireflyhpc (this version) in a venv; return where.

    ``conn`` is a connection to the login node (:class:`fireflyhpc.ssh.Connection`).
    Idempotent: with the same version installed (and working) nothing changes
    unless ``req.force``. A failed install removes the half-made venv. Raises
    ConfigError (bad prefix, unusable Python), RemoteCommandError (a remote step
    failed), LocalError (wheels could not be made here), SSHError.
    """
    if req.index not in INDEX_MODES or req.deps not in DEPS_MODES:
        raise ConfigError(f"bad install request: index={req.index!r}, deps={req.deps!r}")
    start = time.monotonic()
    version = fireflyhpc.__version__
    target = tgt.probe_python(conn, req.python, req.setup)
    target.require_supported()
    prefix = tgt.resolve_prefix(req.prefix, target, version)
    python = posixpath.join(prefix, "bin", "python")
    build = wh.local_build_id()
    conn.run(["mkdir", "-p", "--", posixpath.dirname(prefix)])
    with _Lock(conn, prefix + ".lock", say, LOCK_WAIT_SECONDS):
        marker = read_marker(conn, prefix)
        if not req.force and _usable(conn, marker, prefix, version, req.deps):
            assert marker is not None
            mode = "present"
            if build is not None and marker.get("build") != build:
                say(f"updating fireflyhpc in {prefix}: same version, but its code changed here")
                mode = _refresh_project(conn, prefix, say)
                conn.write_file(posixpath.join(prefix, MARKER),
                                marker_text(version, "complete", str(marker.get("mode")),
                                            str(marker.get("deps")), python, build))
        else:
            _check_replaceable(conn, prefix, marker, req.force)
            mode = _fresh_venv(conn, req, target, prefix, build, say)
        firefly, firefly_changed = None, False
        if req.firefly is not None:
            from fireflyhpc.remote import firefly_install

            used = mode if mode in ("index", "upload") else str((marker or {}).get("mode"))
            use_index = req.index == "yes" or (req.index == "auto" and used == "index")
            firefly, firefly_changed = firefly_install.install_firefly(
                conn, prefix, target, req.firefly, use_index, req.force, say)
            firefly_install.record(conn, posixpath.join(prefix, MARKER), firefly)
    return RemoteInstall(python, version, prefix, changed=mode != "present", mode=mode,
                         seconds=time.monotonic() - start, base_python=target.executable,
                         firefly=firefly, firefly_changed=firefly_changed)


def _usable(conn: tgt.Runs, marker: dict[str, Any] | None, prefix: str, version: str,
            deps: str) -> bool:
    """A complete install of ``version`` (with ``deps``) that still runs."""
    python = posixpath.join(prefix, "bin", "python")
    return bool(marker and marker.get("state") == "complete"
                and marker.get("version") == version and _covers(marker, deps)
                and installed_version(conn, python) == version)


def _fresh_venv(conn: tgt.Runs, req: InstallRequest, target: tgt.RemotePython, prefix: str,
                build: str | None, say: Say) -> str:
    """Make the venv anew and install into it; remove it again if anything fails."""
    version = fireflyhpc.__version__
    python = posixpath.join(prefix, "bin", "python")
    say(f"creating a venv with {target.executable} (Python {target.version_text}) in {prefix}")
    _create_venv(conn, req, prefix)
    done = False
    try:
        conn.write_file(posixpath.join(prefix, MARKER),
                        marker_text(version, "installing", "?", req.deps, python))
        mode = _install_packages(conn, req, target, prefix, say)
        _verify(conn, python, version)
        conn.write_file(posixpath.join(prefix, MARKER),
                        marker_text(version, "complete", mode, req.deps, python,
                                    build if mode == "upload" else None))
        done = True
    finally:
        cleanup(conn, prefix, remove_venv=not done)
    return mode


def _verify(conn: tgt.Runs, python: str, version: str) -> None:
    result, found = _ask_version(conn, python)
    if found != version:
        said = result.stderr if result.exit_code else f"it reports {result.stdout.strip()!r}"
        raise RemoteCommandError([python, "-m", "fireflyhpc", "--version"], result.exit_code,
                                 said, host=result.host or None,
                                 hint=f"after installing, version {version} was expected")


def _refresh_project(conn: tgt.Runs, prefix: str, say: Say) -> str:
    """Reinstall only the fireflyhpc wheel (a checkout changed, the version did not)."""
    python = posixpath.join(prefix, "bin", "python")
    stage = posixpath.join(prefix, STAGE)
    project_whl = wh.project_wheel()
    try:
        (remote,) = upload(conn, [project_whl.path], stage, say)
        pip(conn, python, ["-m", "pip"], ["--no-index", "--no-deps", "--force-reinstall",
                                           remote], isolated=True, what="updating fireflyhpc")
        _verify(conn, python, project_whl.version)
    finally:
        cleanup(conn, prefix, remove_venv=False)
    return "refresh"


def _covers(marker: dict[str, Any], deps: str) -> bool:
    return deps == "payload" or marker.get("deps") == "all"
