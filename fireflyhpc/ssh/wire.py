"""The wire under :class:`~fireflyhpc.ssh.connection.SSHConnection`: sockets, the
ProxyCommand, paramiko Transport settings (ciphers measured fastest first, window),
direct-tcpip channels with the server's own reason on refusal, and keeping paramiko's
ERROR-level logging of failures we report ourselves off the user's stderr.
"""

from __future__ import annotations

import logging
import socket
import subprocess
from typing import Sequence

import paramiko

from fireflyhpc.errors import SSHError
from fireflyhpc.ssh.config import HostSpec
from fireflyhpc.ssh.sshmsg import ChannelOpenError

log = logging.getLogger(__name__)

DEFAULT_CONNECT_TIMEOUT = 30.0
# Fastest first, as measured with paramiko 5.1 on this project's machines (see README).
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr",
                     "aes256-ctr", "aes192-ctr")
PREFERRED_MACS = ("hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com",
                  "hmac-sha2-256", "hmac-sha2-512")
# paramiko's defaults (2 MiB, 32 KiB) measured best: an 8 MiB window was 2-3x slower,
# because paramiko's receive buffer copies its whole backlog on every read.
WINDOW_SIZE = 2 * 2**20
MAX_PACKET_SIZE = 2**15
_CHANNEL_FAILURES = {1: "administratively prohibited", 2: "connect failed",
                     3: "unknown channel type", 4: "resource shortage"}


PARAMIKO_LOG = "fireflyhpc.ssh.paramiko"


class _QuietParamiko(logging.Filter):
    """paramiko logs failures we turn into SSHError (a refused channel, a bad banner) at
    ERROR, with tracebacks, which Python would print on stderr: demote them to DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


for _name in (PARAMIKO_LOG, PARAMIKO_LOG + ".sftp"):  # a filter, not logging configuration
    logging.getLogger(_name).addFilter(_QuietParamiko())


class Transport(paramiko.Transport):
    """A Transport that keeps the server's reason for the last refused channel open
    (paramiko replaces it by a generic text such as "Connect failed")."""

    last_open_failure = ""

    def _parse_channel_open_failure(self, m: paramiko.Message) -> None:
        try:
            m.get_int()
            m.get_int()
            self.last_open_failure = m.get_text()
        except Exception as exc:  # a malformed message: paramiko's own parser reports it
            log.debug("unreadable channel open failure: %s", exc)
        m.rewind()
        super()._parse_channel_open_failure(m)


class ProxyCommand(paramiko.ProxyCommand):
    """paramiko's ProxyCommand, but closing twice is harmless (paramiko's transport does
    close it twice) and the process is reaped and its pipes closed."""

    def close(self) -> None:
        process = self.process
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for pipe in (process.stdin, process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()


def connect_timeout(spec: HostSpec) -> float:
    return float(spec.connect_timeout) if spec.connect_timeout else DEFAULT_CONNECT_TIMEOUT


def prefer(preferred: Sequence[str], available: Sequence[str]) -> tuple[str, ...]:
    """``preferred`` (those available) first, then the rest of ``available`` in its order."""
    first = [name for name in preferred if name in available]
    return tuple(first + [name for name in available if name not in first])


def close_quietly(sock: object) -> None:
    try:
        sock.close()  # type: ignore[attr-defined]
    except Exception as exc:
        log.debug("error closing socket: %s", exc)


def dial(spec: HostSpec) -> object:
    """A connected socket (TCP_NODELAY, keepalive) or ProxyCommand to ``spec``; SSHError if not."""
    if spec.proxy_command:
        try:
            return ProxyCommand(spec.proxy_command)
        except (paramiko.SSHException, OSError) as exc:
            raise SSHError(f"ProxyCommand for {spec.label} failed: {exc}") from exc
    where = f"{spec.alias} ({spec.hostname} port {spec.port})"
    unknown = f"unknown host {spec.hostname!r}" + \
        ("" if spec.hostname == spec.alias else f" (for {spec.alias})")
    timeout = connect_timeout(spec)
    try:
        sock = socket.create_connection((spec.hostname, spec.port), timeout=timeout)
    except socket.gaierror as exc:
        raise SSHError(f"{unknown}: {exc.strerror}") from exc
    except UnicodeError as exc:  # Python's IDNA encoding refuses the name before any lookup
        raise SSHError(f"{unknown}: not a valid host name") from exc
    except ConnectionRefusedError as exc:
        raise SSHError(f"connection to {where} refused (is sshd running there?)") from exc
    except (socket.timeout, TimeoutError) as exc:
        raise SSHError(f"connection to {where} timed out after {timeout:g} s") from exc
    except OSError as exc:
        raise SSHError(f"cannot connect to {where}: {exc.strerror or exc}") from exc
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    return sock


def open_direct(transport: paramiko.Transport, via: str, host: str, port: int,
                 timeout: float) -> paramiko.Channel:
    try:
        return transport.open_channel("direct-tcpip", (host, port), ("127.0.0.1", 0),
                                      timeout=timeout)
    except paramiko.ChannelException as exc:
        reason = getattr(transport, "last_open_failure", "") or exc.text or \
            _CHANNEL_FAILURES.get(exc.code, f"code {exc.code}")
        raise ChannelOpenError(f"{via} could not connect to {host} port {port}: {reason}",
                               code=exc.code, reason=reason) from exc
    except (paramiko.SSHException, OSError, EOFError) as exc:
        why = f"no answer within {timeout:g} s" if "Timeout" in str(exc) else \
            (str(exc) or "connection lost")
        raise SSHError(f"cannot open a channel to {host} port {port} through {via}: {why}") from exc


def send_eof(channel: paramiko.Channel) -> None:
    """Half-close ``channel`` (no more data from us), safely next to a server CLOSE.

    paramiko's ``shutdown_write`` builds the EOF message under the channel's lock but
    sends it after releasing it, so when the server closes the channel at that moment
    (a short command that already exited), the transport thread's CLOSE can go out
    first, and OpenSSH then drops the WHOLE connection ("ieof packet referred to
    nonexistent channel"). Build and send under the lock, and not at all once closed.
    (Cost: should a key re-exchange be under way at that instant while data for this
    channel arrives, the transport thread waits for the lock until paramiko's 30 s
    key-exchange wait gives up; a stall instead of a lost connection.)

    paramiko's ``sendall`` has the same window for data after a CLOSE; it is left as
    is, since holding the lock for every data packet would risk that stall on every
    re-exchange of a bulk transfer.
    """
    with channel.lock:
        if channel.closed or not channel.active or channel.transport is None:
            return
        message = channel._send_eof()  # noqa: SLF001 (paramiko has no public way)
        if message is not None:
            channel.transport._send_user_message(message)  # noqa: SLF001
