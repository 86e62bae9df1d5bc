"""The portable backend: paths built from paramiko transports.

A :class:`ParamikoPath` is given an *open-channel* callable (the only thing the
hot path needs) plus a probe and a close. :func:`tune_transport` sets what
paramiko leaves at slow defaults: AES-GCM first, big windows and packets,
TCP_NODELAY on the socket.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Sequence

import paramiko

from fireflyhpc.ssh.wire import send_eof
from fireflyhpc.tunnel.engine import PathBroken, TargetRefused
from fireflyhpc.tunnel.forward import pump

log = logging.getLogger(__name__)

# Measured on the mini cluster (README, "The tunnel"): larger windows and packets
# than paramiko's defaults (2 MiB, 32 KiB) made nested paths 2-6 times slower
# (paramiko copies its whole receive buffer on every read, so a deep buffer costs
# quadratically) and let keepalive replies queue behind tens of MiB of data. 2 MiB
# is also OpenSSH's own channel window. GCM does encryption and integrity in one
# C call, so it goes first.
WINDOW_SIZE = 2 * 1024 * 1024
MAX_PACKET_SIZE = 32 * 1024
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com",
                     "aes128-ctr", "aes256-ctr")
OPEN_TIMEOUT = 15.0

OpenChannel = Callable[[], paramiko.Channel]


def tune_transport(transport: paramiko.Transport) -> None:
    """Prefer AES-GCM and set large windows on ``transport`` (before it starts)."""
    options = transport.get_security_options()
    available = tuple(options.ciphers)
    options.ciphers = tuple(c for c in PREFERRED_CIPHERS if c in available) + tuple(
        c for c in available if c not in PREFERRED_CIPHERS)
    transport.default_window_size = WINDOW_SIZE
    transport.default_max_packet_size = MAX_PACKET_SIZE
    sock = getattr(transport, "sock", None)
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def probe_transport(transport: paramiko.Transport, timeout: float) -> None:
    """Send ``keepalive@openssh.com`` (want-reply) and wait at most ``timeout`` seconds.

    Any reply, success or failure, proves the far end alive. Raises
    :class:`PathBroken` if the transport is closed or no reply came in time.
    paramiko's ``global_request`` has no deadline, so it runs in a helper
    thread that ends when the reply comes or the transport is closed.
    """
    if not transport.is_active():
        raise PathBroken("SSH connection closed")
    done = threading.Event()

    def ask() -> None:
        try:
            transport.global_request("keepalive@openssh.com", wait=True)
        except Exception:  # closed underneath us: the join below tells
            pass
        finally:
            done.set()

    threading.Thread(target=ask, name="probe", daemon=True).start()
    if not done.wait(timeout) or not transport.is_active():
        raise PathBroken(f"no keepalive reply within {timeout:g} s")


class ParamikoPath:
    """A path whose channels come from ``open_channel``.

    ``transports`` are probed (innermost last); ``on_close`` closes what the path
    owns (the connections it opened, innermost first), and nothing else.
    """

    def __init__(self, open_channel: OpenChannel, *, transports: Sequence[paramiko.Transport],
                 description: str, on_close: Callable[[], None] | None = None) -> None:
        self._open_channel = open_channel
        self._transports = list(transports)
        self._on_close = on_close
        self.description = description

    def forward(self, sock: socket.socket) -> None:
        """Open a channel and pump ``sock`` through it; see :class:`Path`."""
        chan = self._open()
        chan.settimeout(None)
        pump(sock, _ChannelAdapter(chan))

    def check_target(self) -> None:
        """Open one channel to the target and close it at once; see :class:`Path`."""
        self._open().close()

    def _open(self) -> paramiko.Channel:
        try:
            return self._open_channel()
        except paramiko.ChannelException as exc:
            # codes 1 (prohibited) 2 (connect failed) 3 (unknown type)
            reason = last_open_failure() or exc.text or f"channel open failed (code {exc.code})"
            raise TargetRefused(f"connect failed: {reason}") from exc
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise PathBroken(str(exc) or type(exc).__name__) from exc

    def probe(self, timeout: float) -> None:
        """Probe every transport of the path; raise :class:`PathBroken` if one is dead."""
        for transport in self._transports[:-1]:
            if not transport.is_active():
                raise PathBroken("SSH connection to the login node closed")
        probe_transport(self._transports[-1], timeout)

    def close(self) -> None:
        """Close what the path owns (``on_close``); idempotent."""
        if self._on_close is not None:
            self._on_close()
            self._on_close = None


class OpenFailureLog(logging.Handler):
    """Keeps the reason paramiko only logs when a channel open fails.

    paramiko raises ChannelException with a generic text ("Connect failed") and
    logs the server's own reason ("Connection refused", "Name or service not
    known"); this handler keeps that last reason for the error message. Its
    presence also keeps such lines off the user's terminal.
    """

    last_reason: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "open FAILED:" in message:
            OpenFailureLog.last_reason = message.split("open FAILED:", 1)[1].rsplit(":", 1)[0]
        log.debug("%s", message)


def last_open_failure() -> str | None:
    """The reason the server gave for the last failed channel open, if it was logged."""
    reason, OpenFailureLog.last_reason = OpenFailureLog.last_reason, None
    return reason.strip() if reason else None


class _ChannelAdapter:
    """A paramiko Channel seen through the pump's :class:`Channel` protocol."""

    def __init__(self, chan: paramiko.Channel) -> None:
        self._chan = chan
        self.recv = chan.recv
        self.sendall = chan.sendall

    def shutdown_write(self) -> None:
        send_eof(self._chan)

    def close(self) -> None:
        self._chan.close()


def direct_tcpip(transport: paramiko.Transport, host: str, port: int,
                 timeout: float = OPEN_TIMEOUT) -> paramiko.Channel:
    """Open a ``direct-tcpip`` channel on ``transport`` to ``host:port`` (TCP_NODELAY
    is the far sshd's business; OpenSSH sets it on forwarded sockets)."""
    return transport.open_channel("direct-tcpip", (host, port), ("127.0.0.1", 0),
                                  window_size=WINDOW_SIZE, max_packet_size=MAX_PACKET_SIZE,
                                  timeout=timeout)

