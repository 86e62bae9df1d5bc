"""Pure input checks for the tunnel (ports, node names) and "who holds this port".

Everything here is either a pure parser with golden tests or a read-only look at
the local machine (psutil); nothing opens a network connection.
"""

from __future__ import annotations

import re

import psutil

from fireflyhpc.errors import ConfigError

# A hostname (RFC 1123 labels, dots) or an IPv4 address. Underscores are accepted
# because some clusters name nodes that way; everything a shell treats specially
# (spaces, quotes, ;|&$`<>(){}*?!~\ and newlines) is refused.
_HOST_RE = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,252})$")
_SHELL_CHARS = set(" \t\n\r;|&$`'\"<>(){}[]*?!~\\#=%^,")


def parse_port(value: str | int, *, what: str = "port", allow_zero: bool = True) -> int:
    """Return ``value`` as a TCP port number.

    Accepts decimal text or an int in 0..65535 (1..65535 if ``allow_zero`` is
    false). Raises :class:`ConfigError` with a one-line message otherwise.
    """
    text = str(value).strip()
    if not text.isdigit() or not text.isascii():
        raise ConfigError(f"{what} must be a number from {0 if allow_zero else 1} to 65535, "
                          f"not {str(value)!r}")
    number = int(text)
    low = 0 if allow_zero else 1
    if not low <= number <= 65535:
        raise ConfigError(f"{what} must be a number from {low} to 65535, not {number}")
    return number


def validate_host(name: str, *, what: str = "node") -> str:
    """Return ``name`` if it is a plausible host name or IPv4 address.

    Raises :class:`ConfigError` naming the offending character for anything a
    shell would interpret (the name ends up in remote commands and ssh options),
    for empty names, leading dashes (option injection) and overlong names.
    """
    if not name:
        raise ConfigError(f"{what} name is empty")
    bad = sorted({ch for ch in name if ch in _SHELL_CHARS or not ch.isprintable()})
    if bad:
        shown = " ".join(repr(ch) for ch in bad)
        raise ConfigError(f"{what} name {name!r} contains characters not allowed in a host "
                          f"name: {shown}")
    if name.startswith("-"):
        raise ConfigError(f"{what} name {name!r} must not start with '-'")
    if not _HOST_RE.match(name) or ".." in name:
        raise ConfigError(f"{what} name {name!r} is not a valid host name")
    return name


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
