"""Per-user records of running ``connect`` sessions, on disk.

One JSON file per session (``<state dir>/sessions/<id>.json``), versioned, written
atomically (temp file + rename) with mode 0600 in a 0700 folder, so concurrent
``connect`` commands never lose each other's entries and no other user can read a
URL with its token. Whether a session is still alive is checked, not trusted: the
recorded pid must exist on this host with the recorded process start time.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import re
import secrets
import socket
import stat
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import platformdirs

from fireflyhpc.errors import ConfigError, LocalError
from fireflyhpc.fsutil import atomic_write
from fireflyhpc.procutil import own_start_stamp, process_alive

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_ID = re.compile(r"[0-9a-f]{8}")


class Liveness(enum.Enum):
    """What can be said about a session from this machine alone."""

    ALIVE = "alive"  # its connect process runs here
    DEAD = "dead"  # its connect process is gone: the entry is stale
    UNKNOWN = "unknown"  # recorded on another host, or detached (ask the cluster)


@dataclass(frozen=True)
class SessionRecord:
    """One session: where it runs, how to reach it, and who owns it."""

    id: str
    cluster: str | None
    job_id: str | None
    node: str | None
    local_port: int | None
    remote_port: int | None
    url: str | None
    pid: int
    pid_create_time: float
    hostname: str
    submitted_by_us: bool
    created: float = field(default_factory=time.time)
    time_limit_end: float | None = None  # epoch seconds when the job's time runs out
    detached: bool = False
    # epoch seconds since when connect has been reconnecting to the cluster (None: it
    # is connected). Added to version 1 compatibly: older files lack it, older
    # readers skip it.
    reconnecting_since: float | None = None
    login: str | None = None
    remote_pgid: int | None = None
    launch: str | None = None  # "ssh" or "srun": how the payload was started

    @classmethod
    def for_this_process(cls, **values: Any) -> "SessionRecord":
        """A record owned by the calling process (pid, its start time, this host)."""
        return cls(id=values.pop("id", None) or new_id(), pid=os.getpid(),
                   pid_create_time=own_start_stamp(), hostname=socket.gethostname(), **values)


Records = list[SessionRecord]


def new_id() -> str:
    """A fresh random session id (8 hex digits)."""
    return secrets.token_hex(4)


def check_id(session_id: str) -> str:
    """``session_id`` if it looks like one; ConfigError otherwise (never a path)."""
    if not _ID.fullmatch(session_id):
        raise ConfigError(f"not a session id: {session_id!r} (expected 8 hex digits, "
                          "see `fireflyhpc status`)")
    return session_id


def liveness(record: SessionRecord, *, hostname: str | None = None) -> Liveness:
    """Is the record's connect process alive? Judged by pid + create time + host
    (:func:`fireflyhpc.procutil.process_alive`: one that exists but may not be
    inspected counts as alive).

    A detached session has no process here: it is DEAD once its job's time limit
    has passed, UNKNOWN before (only the cluster knows).
    """
    if record.detached:
        ended = record.time_limit_end is not None and record.time_limit_end < time.time()
        return Liveness.DEAD if ended else Liveness.UNKNOWN
    if record.hostname != (hostname or socket.gethostname()):
        return Liveness.UNKNOWN
    return Liveness.ALIVE if process_alive(record.pid, record.pid_create_time) else Liveness.DEAD


def default_state_dir() -> Path:
    """Where session files live: platformdirs' user state dir for fireflyhpc."""
    return Path(platformdirs.user_state_dir("fireflyhpc")) / "sessions"


def _decode(data: Any) -> SessionRecord:
    if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
        raise ValueError(f"not a version {FORMAT_VERSION} session file")
    body = data.get("session")
    if not isinstance(body, dict):
        raise ValueError("no session object")
    known = {f.name for f in fields(SessionRecord)}
    return SessionRecord(**{k: val for k, val in body.items() if k in known})


class SessionStore:
    """Session records in ``directory`` (default: :func:`default_state_dir`)."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or default_state_dir()

    def _ensure_dir(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        info = self.directory.stat()
        if info.st_uid != os.getuid():
            raise LocalError(f"session folder {self.directory} belongs to another user")
        if stat.S_IMODE(info.st_mode) != 0o700:
            os.chmod(self.directory, 0o700)

    def path(self, session_id: str) -> Path:
        """The file of session ``session_id``."""
        return self.directory / f"{check_id(session_id)}.json"

    def add(self, record: SessionRecord) -> SessionRecord:
        """Write ``record`` (replacing one with the same id), atomically, mode 0600."""
        self._ensure_dir()
        text = json.dumps({"version": FORMAT_VERSION, "session": asdict(record)}, indent=2)
        atomic_write(self.path(record.id), text + "\n", mode=0o600)
        return record

    def get(self, session_id: str) -> SessionRecord | None:
        """The record ``session_id``, or None if there is none (or it is unreadable)."""
        try:
            return _decode(json.loads(self.path(session_id).read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as exc:
            log.warning("ignoring unreadable session file %s: %s", self.path(session_id), exc)
            return None

    def list(self) -> Records:
        """Every readable record, oldest first (unreadable files are logged and skipped)."""
        if not self.directory.exists():
            return []
        if not self.directory.is_dir():
            raise LocalError(f"session folder {self.directory} is not a folder")
        records = []
        for path in sorted(self.directory.glob("*.json")):
            if _ID.fullmatch(path.stem):
                record = self.get(path.stem)
                if record is not None:
                    records.append(record)
        return sorted(records, key=lambda r: r.created)

    def remove(self, session_id: str) -> bool:
        """Delete the record; True if there was one."""
        try:
            self.path(session_id).unlink()
            return True
        except FileNotFoundError:
            return False

    def take_over(self, job_id: str, *, hostname: str | None = None) -> bool:
        """Remove the records of ``job_id`` whose server a new session takes over: the
        detached ones, and those whose connect process is gone (killed, its server
        kept on the node for a while); True if one of them had submitted the job."""
        submitted = False
        for record in self.list():
            if record.job_id == job_id and (
                    record.detached or liveness(record, hostname=hostname) is Liveness.DEAD):
                submitted = submitted or record.submitted_by_us
                self.remove(record.id)
        return submitted

    def prune(self, *, hostname: str | None = None) -> Records:
        """Remove the records whose connect process is gone; return them."""
        dead = [r for r in self.list() if liveness(r, hostname=hostname) is Liveness.DEAD]
        for record in dead:
            self.remove(record.id)
        return dead
