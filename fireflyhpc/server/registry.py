"""The per-user registry of running payload servers.

Each server, once listening, writes one JSON file (``server-<host>-<pid>.json``,
version 1, written atomically, mode 0600) into a 0700 directory:
``$FIREFLYHPC_RUNTIME_DIR`` if set, else ``$XDG_RUNTIME_DIR/fireflyhpc`` when
there is one, else platformdirs' user state directory (``~/.local/state/fireflyhpc``)
plus ``/servers``. It removes the file when it exits.

An entry records the hostname, pid, psutil create time, bound host and port,
the URL without the token, and the token itself: the token is what lets
:func:`fireflyhpc.server.quit_all_servers`'s siblings (and the user) rebuild
the full URL later. It is stored under the same protection as ``~/.ssh`` keys
(only the user can read the file or even list the directory), as Jupyter does
for its servers.

An entry is trusted only if its hostname is this host's and a process with its
pid exists with the same create time (:mod:`fireflyhpc.procutil`); entries of this host that fail that test
are stale and removed. Entries of other hosts (a shared home directory) are
left alone.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from fireflyhpc.fsutil import atomic_write
from fireflyhpc.procutil import process_alive, start_stamp
from fireflyhpc.urls import token_url

log = logging.getLogger(__name__)

VERSION = 1
RUNTIME_ENV = "FIREFLYHPC_RUNTIME_DIR"


@dataclass(frozen=True)
class ServerEntry:
    """One registered server."""

    hostname: str
    pid: int
    create_time: float
    host: str
    port: int
    url: str
    token: str | None
    version: int = VERSION

    @property
    def token_url(self) -> str:
        """The URL including ``?token=`` (the plain URL if no token is used)."""
        return token_url(self.url, self.token)


def registry_dir() -> Path:
    """The registry directory, created 0700 if missing (mode fixed if wider)."""
    explicit = os.environ.get(RUNTIME_ENV)
    if explicit:
        base = Path(explicit)
    elif os.environ.get("XDG_RUNTIME_DIR") and os.path.isdir(os.environ["XDG_RUNTIME_DIR"]):
        base = Path(os.environ["XDG_RUNTIME_DIR"]) / "fireflyhpc"
    else:
        import platformdirs

        base = Path(platformdirs.user_state_dir("fireflyhpc"))
    path = base / "servers"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)
    return path


def write_json_atomic(path: Path, document: dict[str, Any], mode: int = 0o600) -> None:
    """Write ``document`` as JSON to ``path`` atomically (:func:`~fireflyhpc.fsutil.atomic_write`)."""
    atomic_write(path, json.dumps(document, indent=1) + "\n", mode=mode)


def register(host: str, port: int, url: str, token: str | None,
             pid: int | None = None) -> Path:
    """Record the server process ``pid`` (default: this one); return the file."""
    pid = os.getpid() if pid is None else pid
    try:
        created = start_stamp(psutil.Process(pid))
    except psutil.Error:
        raise ValueError(f"no process {pid}") from None
    entry = ServerEntry(socket.gethostname(), pid, created, host, port, url, token)
    path = registry_dir() / f"server-{entry.hostname}-{pid}.json"
    write_json_atomic(path, asdict(entry))
    return path


def unregister(path: Path) -> None:
    """Remove a registry file (missing is fine)."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _load(path: Path) -> ServerEntry | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("version") != VERSION:
            return None
        return ServerEntry(**data)
    except (OSError, ValueError, TypeError):
        return None


def is_alive(entry: ServerEntry) -> bool:
    """True if ``entry`` describes a process running on this host right now
    (:func:`fireflyhpc.procutil.process_alive`: one that exists but may not be
    inspected counts as alive)."""
    return entry.hostname == socket.gethostname() and process_alive(entry.pid, entry.create_time)


def list_servers(remove_stale: bool = True) -> list[tuple[Path, ServerEntry]]:
    """This host's live servers, oldest first; stale entries of this host are
    removed (unreadable files and other hosts' entries are skipped)."""
    live = []
    hostname = socket.gethostname()
    for path in sorted(registry_dir().glob("server-*.json")):
        entry = _load(path)
        if entry is None or entry.hostname != hostname:
            continue
        if is_alive(entry):
            live.append((path, entry))
        elif remove_stale:
            log.debug("removing stale registry entry %s", path)
            unregister(path)
    live.sort(key=lambda item: item[1].create_time)
    return live
