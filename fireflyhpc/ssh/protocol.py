"""What every SSH connection offers, whichever backend carries it.

Two backends implement :class:`Connection`: :class:`fireflyhpc.ssh.openssh.OpenSSHConnection`
(the user's own ``ssh``, one ControlMaster per host) and
:class:`fireflyhpc.ssh.connection.SSHConnection` (paramiko, the portable fallback).
Callers get one from :func:`fireflyhpc.ssh.open_connection` and never need to know
which. Every method raises :class:`~fireflyhpc.errors.SSHError` when the connection
is down, :class:`~fireflyhpc.errors.RemoteCommandError` when a checked command fails.
"""

from __future__ import annotations

from types import TracebackType
from typing import Mapping, Protocol, Sequence

from fireflyhpc.ssh.config import HostSpec
from fireflyhpc.ssh.remote import Result


class RemoteProcess(Protocol):
    """A long-lived remote command (a lifeline, a watch channel, an ``srun`` holder).

    Closing our side ends its stdin (and its channel); the remote command decides
    what that means (the scripts fireflyhpc runs this way end on EOF). If this
    process dies, however abruptly, the remote side sees the same EOF.
    """

    argv: tuple[str, ...]

    def write(self, data: bytes) -> None:
        """Send ``data`` to the command's stdin; SSHError if it can no longer be sent."""

    def close_stdin(self) -> None:
        """Send EOF on the command's stdin (idempotent; never raises)."""

    def readline(self, timeout: float | None = None) -> bytes | None:
        """The next stdout line (with its newline; the rest without one at EOF, ``b""``
        after it), or None if none came within ``timeout`` seconds."""

    def poll(self) -> int | None:
        """The exit status once the command has ended (-1: the connection ended
        without one), else None."""

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait up to ``timeout`` seconds (None: for ever) for the exit status; None if
        the command still runs."""

    def close(self) -> None:
        """Stop following the command: stdin and the channel are closed (idempotent)."""


class Stream(Protocol):
    """A byte stream to a TCP port reached through the SSH server (direct-tcpip)."""

    def recv(self, nbytes: int) -> bytes: ...
    def sendall(self, data: bytes) -> None: ...
    def settimeout(self, timeout: float | None) -> None: ...
    def close(self) -> None: ...


class Connection(Protocol):
    """An authenticated SSH connection to one host (see the module doc)."""

    spec: HostSpec  # how the host was resolved (alias, hostname, port, user)
    backend: str  # "openssh" or "paramiko"

    @property
    def asked_user(self) -> bool:
        """True if opening this connection asked the user something (a passphrase, a
        one-time code, a password)."""

    def run(self, argv: Sequence[str], *, timeout: float | None = None, check: bool = True,
            input: bytes | str | None = None,  # noqa: A002
            env: Mapping[str, str] | None = None) -> Result:
        """Run ``argv`` (quoted once) and wait for it: stdin ``input`` then EOF, stdout
        and stderr read in full. RemoteTimeoutError after ``timeout`` seconds (the
        command is sent SIGTERM), RemoteCommandError for a non-zero exit if ``check``."""

    def write_file(self, path: str, data: bytes | str) -> None:
        """Write ``data`` to remote ``path`` atomically, mode 0600, through stdin."""

    def start(self, argv: Sequence[str], *,
              env: Mapping[str, str] | None = None) -> RemoteProcess:
        """Start ``argv`` and return at once with its :class:`RemoteProcess`."""

    def connect_to(self, target: str) -> "Connection":
        """A connection to ``target`` (a compute node) through this one, resolved in
        the same ssh_config; what that config does not set for ``target`` (user, keys,
        known_hosts) is this connection's. Closed with this one."""

    def open_channel_to(self, host: str, port: int, *, timeout: float = 10.0) -> Stream:
        """A stream from this host to ``host:port``; ChannelOpenError if refused."""

    def is_active(self) -> bool:
        """True while the connection is up."""

    def probe(self, timeout: float = 5.0) -> bool:
        """True if the connection answered within ``timeout`` seconds."""

    def reconnect(self) -> None:
        """Connect again after a loss (connections chained through this one are closed)."""

    def close(self) -> None:
        """Close this connection and those chained through it; never raises."""

    def __enter__(self) -> "Connection": ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...


__all__ = ["Connection", "RemoteProcess", "Stream"]
