"""Commands and long-lived processes in session channels of a paramiko transport (the
pure-Python backend; :mod:`fireflyhpc.ssh.remote` builds the command strings)."""

from __future__ import annotations

import logging
import random
import select
import threading
import time
from typing import Mapping, Sequence

import paramiko

from fireflyhpc.errors import RemoteCommandError, SSHError
from fireflyhpc.ssh.process import LineBuffer
from fireflyhpc.ssh.remote import RemoteTimeoutError, Result, build_command
from fireflyhpc.ssh.wire import send_eof

log = logging.getLogger(__name__)

_READ_SIZE = 65536


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


class ParamikoProcess:
    """A command running in a session channel of a paramiko transport."""

    def __init__(self, transport: paramiko.Transport, argv: Sequence[str], command: str,
                 host: str) -> None:
        self.argv = tuple(argv)
        self._host = host
        self._channel = open_session_channel(transport, host)
        try:
            self._channel.exec_command(command)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self._channel.close()
            raise SSHError(f"cannot start `{command}` on {host}: "
                           f"{exc or type(exc).__name__}") from exc
        self._lines = LineBuffer(self._read)

    def _read(self, timeout: float | None) -> bytes | None:
        if not self._channel.recv_ready() and not self._channel.eof_received \
                and not self._channel.closed:
            select.select([self._channel], [], [], 1.0 if timeout is None else min(timeout, 1.0))
        if self._channel.recv_ready():
            return self._channel.recv(65536)
        if self._channel.eof_received or self._channel.closed:
            return b""
        return None

    def write(self, data: bytes) -> None:
        try:
            self._channel.sendall(data)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise SSHError(f"cannot write to `{' '.join(self.argv)}` on {self._host}: "
                           f"{exc or type(exc).__name__}") from exc

    def close_stdin(self) -> None:
        try:
            send_eof(self._channel)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            log.debug("EOF to the remote command not sent: %s", exc)

    def readline(self, timeout: float | None = None) -> bytes | None:
        return self._lines.readline(timeout)

    def poll(self) -> int | None:
        if self._channel.exit_status_ready():
            return self._channel.recv_exit_status()
        if self._channel.closed or not (self._channel.transport and
                                        self._channel.transport.is_active()):
            return -1
        return None

    def wait(self, timeout: float | None = None) -> int | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (status := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                return None
            time.sleep(0.05)
        return status

    def close(self) -> None:
        self._channel.close()


__all__ = ["ParamikoProcess", "open_session_channel", "run_command"]
