"""Running commands on a remote host: the ONE place where argv becomes a shell string.

sshd hands the command string to the user's login shell, so every argv is joined
with :func:`shlex.join` here and nowhere else. The login shell must understand
POSIX single quotes (sh, bash, zsh, ksh, dash); fish and csh mis-read arguments
holding backslashes, ``!`` or newlines. Environment variables are passed as an
``env K=V ...`` prefix (sshd's AcceptEnv is usually closed), which makes them
visible in ``ps``: never put secrets there, send them on stdin or in a 0600 file.
"""

from __future__ import annotations

import logging
import random
import re
import select
import shlex
import threading
import time
from dataclasses import dataclass
from typing import Mapping, Sequence

import paramiko

from fireflyhpc.errors import RemoteCommandError, SSHError
from fireflyhpc.ssh.wire import send_eof

log = logging.getLogger(__name__)

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_READ_SIZE = 65536


class RemoteTimeoutError(RemoteCommandError):
    """A remote command did not finish in time (it was abandoned; its channel closed)."""


@dataclass(frozen=True)
class Result:
    """What a finished remote command left: exit code and decoded output (UTF-8)."""

    argv: tuple[str, ...]
    exit_code: int
    stdout: str
    stderr: str
    host: str = ""

    @property
    def ok(self) -> bool:
        """True if the command exited 0."""
        return self.exit_code == 0


def build_command(argv: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    """Quote ``argv`` (with an ``env K=V`` prefix for ``env``) into one shell command string.

    Raises ValueError for an empty argv, a non-string item or a bad variable name.
    """
    if isinstance(argv, (str, bytes)) or not argv:
        raise ValueError("a remote command must be a non-empty list of strings")
    if not all(isinstance(item, str) for item in argv):
        raise ValueError(f"remote command items must be strings: {list(argv)!r}")
    prefix: list[str] = []
    if env:
        for name, value in env.items():
            if not _ENV_NAME.match(name):
                raise ValueError(f"bad environment variable name {name!r}")
            prefix.append(f"{name}={value}")
        prefix.insert(0, "env")
    return shlex.join(prefix + list(argv))


# Writes stdin to "$1" atomically, 0600 from creation (the data never is an argument).
_WRITE_FILE = 'umask 077 && tmp=$(mktemp "$1.XXXXXX") && cat > "$tmp" && mv -f -- "$tmp" "$1"'


def write_file_argv(path: str) -> list[str]:
    """The command that writes its stdin to remote ``path`` (0600, atomically; pure)."""
    return ["sh", "-c", _WRITE_FILE, "sh", path]


def run_command(transport: paramiko.Transport, argv: Sequence[str], *, host: str = "",
                timeout: float | None = None, check: bool = True,
                input: bytes | str | None = None,  # noqa: A002 (like subprocess.run)
                env: Mapping[str, str] | None = None) -> Result:
    """Run ``argv`` in a new session channel of ``transport`` and wait for it.

    ``input`` is sent on stdin (then EOF); stdout and stderr are read in full.
    Raises RemoteCommandError (exit code non-zero and ``check``),
    RemoteTimeoutError (``timeout`` seconds passed), SSHError (the channel
    could not be opened or the connection died).
    """
    command = build_command(argv, env)
    log.debug("%s$ %s", host, command)
    channel = open_session_channel(transport, host)
    writer: threading.Thread | None = None
    code: int | None = None
    try:
        channel.exec_command(command)
        writer = _start_writer(channel, input)
        out, err, code = _collect(channel, timeout)
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise SSHError(f"connection to {host} lost while running `{command}`: "
                       f"{exc or type(exc).__name__}") from exc
    finally:
        if code is None:  # timed out or interrupted: do not leave the command running
            _signal(channel, "TERM")
        channel.close()
        if writer is not None:
            writer.join(timeout=5)
    if code is None:
        raise RemoteTimeoutError(list(argv), -1, err.decode("utf-8", "replace") +
                                 f"\n(timed out after {timeout} s)", host=host)
    if code == -1 and not transport.is_active():
        raise SSHError(f"connection to {host} lost while running `{command}`")
    result = Result(tuple(argv), code, out.decode("utf-8", "replace"),
                    err.decode("utf-8", "replace"), host)
    if check and code != 0:
        raise RemoteCommandError(list(argv), code, result.stderr, host=host)
    return result


def open_session_channel(transport: paramiko.Transport, host: str = "",
                         patience: float = 10.0) -> paramiko.Channel:
    """Open a session channel, waiting out a temporary refusal.

    sshd refuses a session beyond ``MaxSessions`` (10 by default) per connection, and
    it frees a slot only once the previous command's process has been reaped, so
    many concurrent commands on one connection can be refused for a moment. Retry
    with backoff for up to ``patience`` seconds; raise SSHError if still refused or
    if the connection is down.
    """
    deadline = time.monotonic() + patience
    delay = 0.05
    while True:
        try:
            return transport.open_session(timeout=30)
        except paramiko.SSHException as exc:  # ChannelException is one too
            refused = isinstance(exc, paramiko.ChannelException) or \
                str(exc) == "Unable to open channel."
            if not (refused and transport.is_active() and time.monotonic() < deadline):
                why = (f"the server refused a new session for {patience:g} s (too many "
                       "at once on one connection? see sshd's MaxSessions)") if refused \
                    else str(exc) or type(exc).__name__
                raise SSHError(f"cannot start a command on {host}: {why}") from exc
            log.debug("%s refused a session (%s); retrying in %.2f s", host, exc, delay)
        except (OSError, EOFError) as exc:
            raise SSHError(f"cannot start a command on {host}: "
                           f"{exc or type(exc).__name__}") from exc
        time.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, 1.0)


def _start_writer(channel: paramiko.Channel, data: bytes | str | None) -> threading.Thread | None:
    """Send ``data`` then EOF on stdin, from a thread so a chatty command cannot deadlock us."""
    if data is None:
        send_eof(channel)
        return None
    payload = data.encode() if isinstance(data, str) else bytes(data)

    def feed() -> None:
        try:
            channel.sendall(payload)
            send_eof(channel)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            log.debug("stdin of remote command not fully sent: %s", exc)

    thread = threading.Thread(target=feed, name="ssh-stdin", daemon=True)
    thread.start()
    return thread


def _collect(channel: paramiko.Channel, timeout: float | None) -> tuple[bytes, bytes, int | None]:
    """Read stdout and stderr until the command exits; exit code None on timeout."""
    deadline = None if timeout is None else time.monotonic() + timeout
    out, err = bytearray(), bytearray()
    while True:
        while channel.recv_ready():
            out += channel.recv(_READ_SIZE)
        while channel.recv_stderr_ready():
            err += channel.recv_stderr(_READ_SIZE)
        if channel.exit_status_ready() and not channel.recv_ready() \
                and not channel.recv_stderr_ready():
            if channel.eof_received or channel.closed:
                break
        if channel.closed and not channel.recv_ready() and not channel.recv_stderr_ready():
            break
        wait = 1.0 if deadline is None else deadline - time.monotonic()
        if wait <= 0:
            return bytes(out), bytes(err), None
        select.select([channel], [], [], min(wait, 1.0))
    return bytes(out), bytes(err), channel.recv_exit_status()


def _signal(channel: paramiko.Channel, name: str) -> None:
    """Ask sshd to send signal ``name`` (e.g. "TERM") to the command's process group
    (RFC 4254 "signal" request, honoured by OpenSSH >= 7.9; paramiko has no API for it)."""
    if channel.closed or not channel.active:
        return
    message = paramiko.Message()
    message.add_byte(bytes([98]))  # SSH_MSG_CHANNEL_REQUEST
    message.add_int(channel.remote_chanid)
    message.add_string("signal")
    message.add_boolean(False)
    message.add_string(name)
    try:
        channel.transport._send_user_message(message)  # type: ignore[union-attr]
    except (OSError, EOFError, paramiko.SSHException) as exc:
        log.debug("could not signal the remote command: %s", exc)
