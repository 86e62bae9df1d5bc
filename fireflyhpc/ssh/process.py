"""Long-lived remote commands (:class:`~fireflyhpc.ssh.protocol.RemoteProcess`) over a
paramiko channel, and the line reading both backends share."""

from __future__ import annotations

import logging
import select
import time
from typing import Callable, Sequence

import paramiko

from fireflyhpc.errors import SSHError
from fireflyhpc.ssh.wire import send_eof

log = logging.getLogger(__name__)

Read = Callable[[float | None], "bytes | None"]  # a chunk, b"" at EOF, None: none in time


class LineBuffer:
    """Cuts a stream read in chunks by ``read(timeout)`` into lines."""

    def __init__(self, read: Read) -> None:
        self._read = read
        self._buffer = b""
        self._eof = False

    def readline(self, timeout: float | None = None) -> bytes | None:
        """A line with its newline, the rest at EOF (``b""`` once drained), None on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._buffer and not self._eof:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            chunk = self._read(left)
            if chunk is None:
                continue
            if chunk == b"":
                self._eof = True
            self._buffer += chunk
        line, sep, rest = self._buffer.partition(b"\n")
        self._buffer = rest
        return line + sep


class ParamikoProcess:
    """A command running in a session channel of a paramiko transport."""

    def __init__(self, transport: paramiko.Transport, argv: Sequence[str], command: str,
                 host: str) -> None:
        from fireflyhpc.ssh.remote import open_session_channel

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


__all__ = ["LineBuffer", "ParamikoProcess"]
