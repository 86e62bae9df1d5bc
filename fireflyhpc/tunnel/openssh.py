"""The OpenSSH backend: paths over the system ``ssh``'s ControlMasters.

Our Python listener stays bound; each accepted connection is handed to a
multiplexing client ``ssh -S CTL -W HOST:PORT``, with the client socket as its
stdin and stdout. The mux client passes those descriptors to the master, and
the master moves the bytes itself: no Python on the data path, and OpenSSH's
C crypto (AES-GCM preferred) on every hop.

The masters are those of an :class:`~fireflyhpc.ssh.openssh.OpenSSHConnection`
(:mod:`fireflyhpc.ssh.master`): the login connection's own (the user's, or the one
fireflyhpc started, so one login answers every question), and for the ``ssh``
hop a node connection chained through it.

- ``direct`` hop: ``-W NODE:PORT`` through the login master.
- ``ssh`` hop: ``-W localhost:PORT`` through the node master.

Liveness: masters we start run with ``ServerAliveInterval``/``CountMax`` so a dead
path makes them exit; :meth:`OpenSSHPath.probe` also asks each ``-O check``.
"""

from __future__ import annotations

import fcntl
import logging
import socket
import struct
import subprocess
import termios
import threading
from collections.abc import Callable

from fireflyhpc.ssh.openssh import OpenSSHConnection
from fireflyhpc.tunnel.engine import PathBroken, TargetRefused

log = logging.getLogger(__name__)

# What a mux client says when it never reached the master (so no byte moved).
_NOT_STARTED = ("Control socket connect", "mux_client_hello", "Connection closed by UNKNOWN",
                "kex_exchange_identification", "cannot run ssh")


class OpenSSHPath:
    """A path over one or two connections; connections are stdio forwards of the last.

    ``on_close`` closes what the path owns (the node hop, and the login connection
    when the path opened it), nothing else.
    """

    def __init__(self, hops: list[OpenSSHConnection], target: tuple[str, int],
                 description: str, on_close: Callable[[], None] | None = None) -> None:
        self._hops = hops
        self._target = target
        self._on_close = on_close
        self.description = description

    def forward(self, sock: socket.socket) -> None:
        """Hand ``sock`` to a mux client of the last master; wait until it ends."""
        mark = self._mark()
        proc = self._spawn(sock)
        _, err = proc.communicate()
        # Raises (leaving sock open for the engine to answer or retry) only if the
        # master never touched the connection.
        self._judge(proc.returncode, err, mark,
                    untouched=untouched(sock) and not _at_eof(sock))
        _close(sock)

    def check_target(self, settle: float = 3.0) -> None:
        """Open one stdio forward to the target and end it; see :class:`Path`.

        A refusal comes back at once; a forward still open after ``settle``
        seconds (a server that ignores EOF) counts as success.
        """
        ours, theirs = socket.socketpair()
        try:
            ours.shutdown(socket.SHUT_WR)  # EOF as soon as the channel is open
            mark = self._mark()
            proc = self._spawn(theirs)
            try:
                _, err = proc.communicate(timeout=settle)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                return
            self._judge(proc.returncode, err, mark, untouched=False)
        finally:
            _close(ours)
            _close(theirs)

    def _spawn(self, sock: socket.socket) -> subprocess.Popen[bytes]:
        argv = self._hops[-1].forward_argv(*self._target)
        try:
            return subprocess.Popen(argv, stdin=sock.fileno(), stdout=sock.fileno(),
                                    stderr=subprocess.PIPE)
        except OSError as exc:
            raise PathBroken(f"cannot run ssh: {exc}") from exc

    def _mark(self) -> int:
        master = self._hops[-1].master
        return master.lines_seen() if master else 0

    def _judge(self, returncode: int, err: bytes, mark: int, *, untouched: bool) -> None:
        """Raise TargetRefused/PathBroken for a mux client that never forwarded anything.

        ``untouched``: no byte of the connection was read or written by the
        master, so it may be answered locally or retried on another path.
        """
        text = err.decode("utf-8", "replace").strip()
        if returncode == 0 and not untouched:
            return
        if "open refused" in text or "open failed" in text:
            raise TargetRefused(self._refusal_reason(mark))
        if untouched or any(marker in text for marker in _NOT_STARTED):
            raise PathBroken(text.splitlines()[-1] if text else f"ssh exited {returncode}")
        # The forward was running and ended badly (the master died mid-way): the
        # connection is over; the supervisor's probe notices a dead path.
        log.debug("forward ended: %s", text or f"ssh exited {returncode}")

    def _refusal_reason(self, mark: int) -> str:
        """The master logs why a channel failed ("connect failed: Connection refused")."""
        master = self._hops[-1].master  # the user's own master's log is not ours to read
        return (master.open_failure(mark) if master else None) or "the channel was refused"

    def probe(self, timeout: float) -> None:
        """Raise PathBroken unless every master is alive and answering."""
        for hop in self._hops:
            if not hop.probe(timeout):
                raise PathBroken(f"ssh connection to {hop.spec.alias} ended")

    def close(self) -> None:
        """Close what the path owns (``on_close``); idempotent."""
        if self._on_close is not None:
            self._on_close()
            self._on_close = None


def path_over(login: OpenSSHConnection, node: str, port: int, hop: str, *, owned: bool,
              cancel: threading.Event | None = None) -> OpenSSHPath:
    """The path for ``hop`` (``ssh`` or ``direct``) over the connection ``login``.

    ``owned``: closing the path closes ``login`` too (else only the node hop).
    Raises NodeSSHError if only the node refused, SSHError otherwise.
    """
    via = f"ssh {login.spec.alias} (OpenSSH" + ("" if login.owns_master else
                                                 ", your own master") + ")"
    if hop == "direct":
        return OpenSSHPath([login], (node, port), f"{via}, direct to {node}:{port}",
                           on_close=login.close if owned else None)
    inner = login.connect_to(node, cancel=cancel)  # NodeSSHError if the node refuses
    return OpenSSHPath([login, inner], ("localhost", port),
                       f"{via} -> ssh {node} (OpenSSH), to the node's localhost:{port}",
                       on_close=login.close if owned else inner.close)


def untouched(sock: socket.socket) -> bool:
    """True if nobody consumed or wrote a byte of ``sock`` since it was accepted.

    Linux: everything the client sent is still queued (SIOCINQ equals
    tcpi_bytes_received) and nothing was sent to it (tcpi_bytes_acked and
    SIOCOUTQ are 0). Elsewhere: False (never retry what may have been used).
    """
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
        acked, received = struct.unpack_from("=QQ", info, 120)
        queued_in = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4))[0]
        queued_out = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
    except (OSError, AttributeError, struct.error):
        return False
    return acked == 0 and queued_out == 0 and queued_in == received


def _at_eof(sock: socket.socket) -> bool:
    """True if the local client has closed its side (a browser preconnect, say)."""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except OSError:
        return False


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass
