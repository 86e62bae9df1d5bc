"""`remote-install --with-firefly[=VERSION]`: Firefly itself in the payload venv.

Firefly (the ``firefly`` package with numpy, h5py, pandas, scipy, matplotlib and
its Flask/Socket.IO stack: several hundred MB installed) comes from the same
place as fireflyhpc did: the cluster's package index, or wheels downloaded on
this machine for the cluster's Python and platform, uploaded by SFTP and
installed with ``pip --no-index`` (cached here like the others). Once it is
there, ``connect`` (``--payload auto``, the default) serves Firefly's own app.

Already there in the requested version (or any version, when none is asked
for), it is left alone unless ``--force``. The installed version is recorded in
the venv's marker file.
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
from typing import Any, Callable

from fireflyhpc.errors import ConfigError, RemoteCommandError
from fireflyhpc.remote import target as tgt
from fireflyhpc.remote.pipsteps import STAGE, cleanup, pip, upload
from fireflyhpc.remote import wheels as wh

log = logging.getLogger(__name__)

Say = Callable[[str], None]
_VERSION = re.compile(r"[0-9][0-9A-Za-z.+!-]*")
# Prints Firefly's version and where fireflyhpc finds its web app (no numpy import).
CHECK_PROGRAM = """
import importlib.metadata as m
from fireflyhpc.server.viewers import firefly_app_dir
print(m.version("firefly"), firefly_app_dir() or "")
"""


def requirement(version: str) -> str:
    """``firefly`` or ``firefly==VERSION`` (pure; ConfigError for a malformed version)."""
    if not version:
        return "firefly"
    if not _VERSION.fullmatch(version):
        raise ConfigError(f"--with-firefly={version}: not a version number")
    return f"firefly=={version}"


def installed_firefly(conn: tgt.Runs, python: str) -> str | None:
    """The Firefly version importable by ``python`` whose web app fireflyhpc finds."""
    result = conn.run([python, "-c", CHECK_PROGRAM], check=False, timeout=120)
    words = result.stdout.split() if result.exit_code == 0 else []
    return words[0] if len(words) == 2 else None


def install_firefly(conn: Any, prefix: str, target: tgt.RemotePython, version: str,
                    use_index: bool, force: bool, say: Say) -> tuple[str, bool]:
    """Make Firefly (``version``, or any when empty) importable by the venv at
    ``prefix``; return (its version, whether anything was installed).

    Raises RemoteCommandError when pip fails there or Firefly is still missing
    afterwards, LocalError when the wheels cannot be fetched here.
    """
    python, stage = posixpath.join(prefix, "bin", "python"), posixpath.join(prefix, STAGE)
    wanted = requirement(version)
    found = installed_firefly(conn, python)
    if found and not force and (not version or found == version):
        return found, False
    if use_index:
        say(f"installing {wanted} from the cluster's package index")
        pip(conn, python, ["-m", "pip"], [wanted], isolated=False, what=f"installing {wanted}")
    else:
        say(f"fetching wheels of {wanted} for Python {target.version_text} here")
        files = wh.download_wheels([wanted], tgt.pip_target_args(target))
        try:
            upload(conn, files, stage, say)
            say(f"installing {wanted} on the cluster")
            pip(conn, python, ["-m", "pip"], ["--no-index", "--find-links", stage, wanted],
                 isolated=True, what=f"installing {wanted}")
        finally:
            cleanup(conn, prefix, remove_venv=False)
    found = installed_firefly(conn, python)
    if not found or (version and found != version):
        raise RemoteCommandError([python, "-c", "import firefly"], 1,
                                 f"after installing {wanted}, it finds "
                                 f"{'firefly ' + found if found else 'no usable firefly'}")
    return found, True


def record(conn: Any, marker_path: str, firefly: str) -> None:
    """Add the Firefly version to the venv's marker file (kept as it was otherwise)."""
    result = conn.run(["cat", "--", marker_path], check=False)
    try:
        marker = json.loads(result.stdout) if result.exit_code == 0 else {}
    except ValueError:
        marker = {}
    if not isinstance(marker, dict):
        marker = {}
    marker["firefly"] = firefly
    conn.write_file(marker_path, json.dumps(marker, indent=1) + "\n")

