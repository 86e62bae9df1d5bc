"""Steps of installing into a venv on the cluster that remote-install and its Firefly
option share: upload wheels, run pip there, remove the upload stage."""

from __future__ import annotations

import logging
import posixpath
from pathlib import Path
from typing import Callable, Sequence

from fireflyhpc.errors import FireflyHPCError, RemoteCommandError
from fireflyhpc.remote import target as tgt

log = logging.getLogger(__name__)

Say = Callable[[str], None]

STAGE = ".fireflyhpc-wheels"  # the upload folder inside the venv
# pip with no user or site configuration (wheels uploaded from here only)
ISOLATED_PIP_ENV = {"PIP_CONFIG_FILE": "/dev/null", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def upload(conn: tgt.Runs, files: Sequence[Path], remote_dir: str, say: Say) -> list[str]:
    """Copy ``files`` into ``remote_dir`` (created) through the SSH connection's stdin;
    return the remote paths."""
    conn.run(["mkdir", "-p", "--", remote_dir])
    size = sum(f.stat().st_size for f in files)
    say(f"uploading {len(files)} wheels ({size / 2**20:.1f} MiB)")
    paths = []
    for file in files:
        remote = posixpath.join(remote_dir, file.name)
        conn.write_file(remote, file.read_bytes())
        paths.append(remote)
    return paths


def pip(conn: tgt.Runs, python: str, pip: Sequence[str], args: Sequence[str],
        isolated: bool, what: str) -> None:
    """Run ``python PIP install ARGS`` on the cluster; RemoteCommandError naming ``what``."""
    env = ISOLATED_PIP_ENV if isolated else {"PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    argv = [python, *pip, "install", "--no-cache-dir", "--quiet", *args]
    result = conn.run(argv, check=False, timeout=1800, env=env)
    if result.exit_code != 0:
        hint = None if isolated else "the cluster's package index may not have it; " \
            "use --index no to upload wheels from this machine"
        raise RemoteCommandError(argv, result.exit_code, result.stderr or result.stdout,
                                 host=result.host or None, hint=hint or f"while {what}")


def cleanup(conn: tgt.Runs, prefix: str, *, remove_venv: bool) -> None:
    """Remove the upload stage (and the whole venv after a failure); never raises."""
    path = prefix if remove_venv else posixpath.join(prefix, STAGE)
    try:
        conn.run(["rm", "-rf", "--", path], check=False, timeout=300)
    except FireflyHPCError as exc:
        log.warning("could not remove %s on the cluster: %s", path, exc)
