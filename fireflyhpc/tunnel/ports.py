"""Who holds a local port: a read-only look at the local machine (psutil).

Nothing here opens a network connection. (Port numbers and host names are checked
by :mod:`fireflyhpc.validate`.)
"""

from __future__ import annotations

import psutil


def port_holder(port: int, host: str = "127.0.0.1") -> str | None:
    """Describe the local process listening on ``port`` (any address or ``host``).

    Returns e.g. ``"python3 (pid 1234, user alice)"``, ``"another process"`` when
    the owner cannot be seen (other users' sockets without privileges), or
    ``None`` when nobody listens there.
    """
    try:
        conns = psutil.net_connections(kind="inet")
    except (psutil.AccessDenied, OSError):
        return None
    wildcard = {"0.0.0.0", "::", host, "::ffff:" + host}
    mine = [c for c in conns if c.laddr and c.laddr.port == port and c.laddr.ip in wildcard]
    for conn in mine:
        if conn.status == psutil.CONN_LISTEN:
            return describe_pid(conn.pid)
    for conn in mine:  # no listener: an open connection may use the port
        if conn.status != psutil.CONN_TIME_WAIT:
            return f"a {conn.status.lower()} connection of {describe_pid(conn.pid)}"
    return None


def describe_pid(pid: int | None) -> str:
    """Return ``"name (pid N, user U)"`` for a pid, or a neutral phrase if unknown."""
    if pid is None:
        return "another process (not visible to this user)"
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            name = proc.name()
            try:
                user = proc.username()
            except (psutil.AccessDenied, KeyError):
                user = "?"
        return f"{name} (pid {pid}, user {user})"
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return f"process {pid}"
