"""Commands, long-lived processes and forwarded streams as clients of a ControlMaster.

Each is one short-lived ``ssh -S CONTROL`` multiplexing client (see
:meth:`fireflyhpc.ssh.master.OpenSSHOptions.mux`): the master opens the channel,
the client relays stdin, stdout, stderr and the exit status, or hands a socket
over (``-W``) so that the master itself moves the bytes.
"""

from __future__ import annotations

import logging
import os
import re
import select
import socket
import subprocess
import threading
import time
from typing import Callable, Sequence

from fireflyhpc.errors import RemoteCommandError, SSHError
from fireflyhpc.ssh.process import LineBuffer
from fireflyhpc.ssh.remote import RemoteTimeoutError, Result
from fireflyhpc.ssh.sshmsg import ChannelOpenError

log = logging.getLogger(__name__)

# Every command runs under this wrapper, which first says its pid on stderr, so that
# one that times out (or is interrupted) can be sent SIGTERM: a multiplexing client
# has no way to send sshd a signal request.
PID_WRAPPER = 'printf "fireflyhpc-pid %s\\n" "$$" >&2; exec "$@"'
_PID_LINE = re.compile(r"^fireflyhpc-pid (\d+)\n", re.MULTILINE)
# $1: the pid. Its process group is the command's sshd session (sshd gives each
# session one); fall back to the process itself.
KILL_SCRIPT = ('g=$(ps -o pgid= -p "$1" 2>/dev/null | tr -d " "); '
               'if [ -n "$g" ] && [ "$g" != 0 ]; then kill -s TERM -- "-$g"; '
               'else kill -s TERM -- "$1"; fi 2>/dev/null; exit 0')
_FORWARD_FAILURES = {"administratively prohibited": 1, "connect failed": 2,
                     "unknown channel type": 3, "resource shortage": 4}


def split_pid(stderr: str) -> tuple[int | None, str]:
    """(the wrapper's pid, stderr without its line) (pure)."""
    match = _PID_LINE.search(stderr)
    if match is None:
        return None, stderr
    return int(match.group(1)), stderr[:match.start()] + stderr[match.end():]


def run_mux(mux: list[str], command: str, argv: Sequence[str], *, host: str,
            timeout: float | None, check: bool, input: bytes | str | None,  # noqa: A002
            alive: Callable[[], bool], kill: Callable[[int], None]) -> Result:
    """Run ``command`` (``argv`` quoted, already under :data:`PID_WRAPPER`) through the
    master of ``mux``; see :meth:`fireflyhpc.ssh.protocol.Connection.run`."""
    data = input.encode() if isinstance(input, str) else input
    try:
        proc = subprocess.Popen([*mux, "-T", "--", "mux", command], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL if data is None else subprocess.PIPE)
    except OSError as exc:
        raise SSHError(f"cannot run ssh: {exc}") from exc
    try:
        out, err = proc.communicate(data, timeout=timeout)
    except subprocess.TimeoutExpired as exc:  # SIGTERM to the command, then give up on it
        pid, text = split_pid((exc.stderr or b"").decode("utf-8", "replace"))
        if pid is not None:
            kill(pid)
        _abandon(proc)
        raise RemoteTimeoutError(list(argv), -1, text + f"\n(timed out after {timeout} s)",
                                 host=host) from None
    except BaseException:  # Ctrl-C: do not wait for the command
        _abandon(proc)
        raise
    pid, text = split_pid(err.decode("utf-8", "replace"))
    code = proc.returncode
    if code == 255 and (pid is None or not alive()):
        raise SSHError(f"connection to {host} lost while running `{command}`"
                       + (f": {text.strip().splitlines()[-1]}" if text.strip() else ""))
    result = Result(tuple(argv), code, out.decode("utf-8", "replace"), text, host)
    if check and code != 0:
        raise RemoteCommandError(list(argv), code, result.stderr, host=host)
    return result


def _abandon(proc: subprocess.Popen[bytes]) -> None:
    """End a mux client without waiting for its pipes: the master holds copies of them
    until the remote command ends."""
    proc.kill()
    proc.wait()
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            try:
                pipe.close()
            except OSError:
                pass


class OpenSSHProcess:
    """A remote command followed by a multiplexing client (stdin, stdout, exit status)."""

    def __init__(self, mux: list[str], command: str, argv: Sequence[str], host: str,
                 alive: Callable[[], bool]) -> None:
        self.argv = tuple(argv)
        self._host = host
        self._alive = alive
        try:
            self._proc = subprocess.Popen([*mux, "-T", "--", "mux", command],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE)
        except OSError as exc:
            raise SSHError(f"cannot run ssh: {exc}") from exc
        self._stderr: list[str] = []
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        assert self._proc.stdout is not None
        self._stdout_fd = self._proc.stdout.fileno()
        self._lines = LineBuffer(self._read)

    def _drain_stderr(self) -> None:
        assert self._proc.stderr is not None
        for raw in self._proc.stderr:
            self._stderr.append(raw.decode("utf-8", "replace").rstrip())
            del self._stderr[:-50]

    def _read(self, timeout: float | None) -> bytes | None:
        ready, _, _ = select.select([self._stdout_fd], [], [], timeout)
        return os.read(self._stdout_fd, 65536) if ready else None

    def write(self, data: bytes) -> None:
        try:
            assert self._proc.stdin is not None
            self._proc.stdin.write(data)
            self._proc.stdin.flush()
        except (OSError, ValueError) as exc:
            raise SSHError(f"cannot write to `{' '.join(self.argv)}` on {self._host}: "
                           f"{exc}") from exc

    def close_stdin(self) -> None:
        try:
            if self._proc.stdin is not None:
                self._proc.stdin.close()
        except OSError as exc:
            log.debug("closing stdin of the remote command: %s", exc)

    def readline(self, timeout: float | None = None) -> bytes | None:
        return self._lines.readline(timeout)

    def poll(self) -> int | None:
        code = self._proc.poll()
        if code == 255 and not self._alive():
            return -1
        return code

    def wait(self, timeout: float | None = None) -> int | None:
        try:
            self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.poll()

    def close(self) -> None:
        self.close_stdin()
        if self._proc.poll() is None:
            self._proc.terminate()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()


class ForwardedStream:
    """A local socket whose other end a multiplexing client (``-W``) handed to the
    master: bytes to and from ``host:port`` as the remote host reaches it."""

    def __init__(self, sock: socket.socket, proc: subprocess.Popen[bytes]) -> None:
        self._sock = sock
        self._proc = proc
        self.recv = sock.recv
        self.sendall = sock.sendall
        self.settimeout = sock.settimeout

    def close(self) -> None:
        try:
            self._sock.close()
        finally:
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


def forward_stream(mux: list[str], via: str, host: str, port: int, timeout: float,
                   reason: Callable[[], str | None] = lambda: None) -> ForwardedStream:
    """Open ``host:port`` from the master's host; ChannelOpenError if it is refused.

    Success is the target speaking first or the forward still up after a short
    settling time (at most ``timeout``); a refusal ends the client at once.
    ``reason`` gives the master's own words for the refusal when it has them.
    """
    ours, theirs = socket.socketpair()
    try:
        proc = subprocess.Popen([*mux, "-W", f"{host}:{port}", "--", "mux"],
                                stdin=theirs.fileno(), stdout=theirs.fileno(),
                                stderr=subprocess.PIPE)
    except OSError as exc:
        ours.close()
        raise SSHError(f"cannot run ssh: {exc}") from exc
    finally:
        theirs.close()
    deadline = time.monotonic() + min(timeout, 2.0)
    while proc.poll() is None:
        left = deadline - time.monotonic()
        pending = _pending(ours)
        if left <= 0 or pending:
            return ForwardedStream(ours, proc)
        if pending is None:  # EOF already: the forward failed or ended; its status says
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                return ForwardedStream(ours, proc)
            break
        select.select([ours], [], [], min(left, 0.05))
    if proc.returncode == 0:  # the target answered and closed at once
        return ForwardedStream(ours, proc)
    _, err = proc.communicate()
    ours.close()
    why = reason() or _last_line(err.decode("utf-8", "replace")) or "the channel was refused"
    code = next((c for text, c in _FORWARD_FAILURES.items() if why.startswith(text)), 0)
    raise ChannelOpenError(f"{via} could not connect to {host} port {port}: {why}", code=code,
                           reason=why)


def _pending(sock: socket.socket) -> bool | None:
    """True if data waits on ``sock``, None at EOF, False if nothing came yet."""
    try:
        return len(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)) > 0 or None
    except BlockingIOError:
        return False
    except OSError:
        return None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


__all__ = ["ForwardedStream", "KILL_SCRIPT", "OpenSSHProcess", "PID_WRAPPER", "forward_stream",
           "run_mux", "split_pid"]
