"""One authenticated SSH connection (through its ProxyJump hops), reused for everything.

:class:`SSHConnection` dials the first hop over TCP (TCP_NODELAY) or a
ProxyCommand, runs one :class:`paramiko.Transport` per hop, each next one over a
``direct-tcpip`` channel of the previous, verifies every host key and
authenticates every hop. Commands (:meth:`run`), forwarded channels
(:meth:`open_channel_to`), SFTP and further connections chained through this one
(:meth:`connect_to`, e.g. a compute node) all share these transports, so a user
with two-factor authentication answers once per session.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import threading
from types import TracebackType
from typing import Mapping, Sequence

import paramiko

from fireflyhpc.errors import SSHError
from fireflyhpc.ssh.auth import Authenticator, Prompter, shared_authenticator
from fireflyhpc.ssh.config import HostSpec, config_path, read_config, resolve_host
from fireflyhpc.ssh.hostkeys import HostKeyChecker
from fireflyhpc.ssh.remote import Result, run_command

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


class _Transport(paramiko.Transport):
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


class _ProxyCommand(paramiko.ProxyCommand):
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


class ChannelOpenError(SSHError):
    """The server refused to open a forwarded (direct-tcpip) channel.

    ``code`` is the SSH reason code (2: the target refused or is unreachable).
    """

    def __init__(self, message: str, *, code: int, reason: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


class SSHConnection:
    """An SSH connection to ``spec`` (through its hops, or through ``parent``).

    Use as a context manager, or call :meth:`connect` and :meth:`close`. All methods
    raise SSHError when the connection is not up or breaks.
    """

    def __init__(self, spec: HostSpec, *, authenticator: Authenticator | None = None,
                 host_keys: HostKeyChecker | None = None,
                 config: paramiko.SSHConfig | None = None,
                 parent: "SSHConnection | None" = None) -> None:
        self.spec = spec
        self.authenticator = authenticator or shared_authenticator()
        self.host_keys = host_keys or HostKeyChecker()
        self.config = config if config is not None else paramiko.SSHConfig()
        self.parent = parent
        self._transports: list[paramiko.Transport] = []
        self._children: list[SSHConnection] = []
        self._lock = threading.Lock()

    @classmethod
    def open(cls, target: str, *, ssh_config: str | None = None, accept_new_host_key: bool = False,
             prompter: Prompter | None = None,
             authenticator: Authenticator | None = None) -> "SSHConnection":
        """Resolve ``target`` through the user's ssh_config (``ssh_config`` path, else
        ~/.ssh/config) and return the connected SSHConnection.

        Without ``authenticator`` or ``prompter``, the program's shared Authenticator
        (terminal prompts; decrypted keys remembered for the run) is used.

        Raises ConfigError (bad config or target) or SSHError.
        """
        config = read_config(config_path(ssh_config))
        spec = resolve_host(config, target)
        auth = authenticator or (Authenticator(prompter) if prompter is not None
                                 else shared_authenticator())
        conn = cls(spec, authenticator=auth, config=config,
                   host_keys=HostKeyChecker(accept_new=accept_new_host_key))
        return conn.connect()

    # -- lifecycle -------------------------------------------------------------------
    def connect(self) -> "SSHConnection":
        """Open every hop and the final host; return self. Idempotent while connected."""
        with self._lock:
            if self._transports and self._transports[-1].is_active():
                return self
            self._close_transports()
            try:
                self._open_chain()
            except BaseException:
                self._close_transports()
                raise
        return self

    def reconnect(self) -> None:
        """Drop the transports (closing chained connections) and connect again; cached
        keys and passwords are reused. A chained connection stays its parent's child."""
        self._shut()
        self.connect()

    def close(self) -> None:
        """Close chained connections, then the transports, last hop first. Never raises."""
        self._shut()
        if self.parent is not None and self in self.parent._children:
            self.parent._children.remove(self)

    def _shut(self) -> None:
        for child in list(self._children):
            child.close()
        self._children.clear()
        with self._lock:
            self._close_transports()

    def __enter__(self) -> "SSHConnection":
        return self.connect()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _close_transports(self) -> None:
        while self._transports:
            transport = self._transports.pop()
            try:
                transport.close()
            except Exception as exc:  # closing must not mask the real error
                log.debug("error closing transport: %s", exc)

    def _open_chain(self) -> None:
        hops = () if self.parent is not None else self.spec.proxy_jump
        if self.parent is not None and self.spec.proxy_jump:
            log.debug("ignoring ProxyJump of %s: chained through %s", self.spec.alias,
                      self.parent.spec.alias)
        previous: HostSpec | None = None
        for spec in (*hops, self.spec):
            if self._transports:
                sock: object = self._channel(self._transports[-1], previous, spec)
            elif self.parent is not None:
                sock = self.parent.open_channel_to(spec.hostname, spec.port,
                                                   timeout=_timeout(spec))
            else:
                sock = _dial(spec)
            self._transports.append(self._handshake(sock, spec))
            previous = spec

    def _channel(self, transport: paramiko.Transport, via: HostSpec | None,
                 spec: HostSpec) -> paramiko.Channel:
        return _open_direct(transport, via.alias if via else "?", spec.hostname, spec.port,
                            _timeout(spec))

    def _handshake(self, sock: object, spec: HostSpec) -> paramiko.Transport:
        """Key exchange, host key check and authentication on ``sock``; closes it on failure."""
        try:
            transport = _Transport(sock, default_window_size=WINDOW_SIZE,
                                   default_max_packet_size=MAX_PACKET_SIZE)
        except Exception:
            _close_quietly(sock)
            raise
        try:
            transport.set_log_channel(PARAMIKO_LOG)
            options = transport.get_security_options()
            options.ciphers = _prefer(PREFERRED_CIPHERS, options.ciphers)
            options.digests = _prefer(PREFERRED_MACS, options.digests)
            options.key_types = self.host_keys.preferred_key_types(spec, tuple(options.key_types))
            transport.banner_timeout = transport.handshake_timeout = _timeout(spec)
            try:
                transport.start_client(timeout=_timeout(spec))
            except (paramiko.SSHException, EOFError, OSError) as exc:
                hint = "is an SSH server listening there?" if "banner" in str(exc) else None
                raise SSHError(f"SSH handshake with {spec.label} failed: "
                               f"{exc or type(exc).__name__}", hint=hint) from exc
            if not (transport.is_active() and getattr(transport, "initial_kex_done", True)):
                raise SSHError(f"SSH handshake with {spec.label} failed: no answer within "
                               f"{_timeout(spec):g} s")
            self.host_keys.check(spec, transport.get_remote_server_key())
            self.authenticator.authenticate(transport, spec)
            if spec.server_alive_interval:
                transport.set_keepalive(spec.server_alive_interval)
            log.debug("connected to %s (%s, %s)", spec.label, transport.local_cipher,
                      transport.local_mac)
            return transport
        except BaseException:
            transport.close()
            raise

    # -- using the connection ------------------------------------------------------------
    @property
    def transport(self) -> paramiko.Transport:
        """The authenticated Transport of the final host; SSHError if not connected."""
        if not self._transports:
            raise SSHError(f"not connected to {self.spec.label}")
        return self._transports[-1]

    @property
    def transports(self) -> tuple[paramiko.Transport, ...]:
        """Every hop's Transport, first hop first, the final host last."""
        return tuple(self._transports)

    def is_active(self) -> bool:
        """True while every transport of the chain (and the parent's) is up."""
        parent_ok = self.parent is None or self.parent.is_active()
        return parent_ok and bool(self._transports) and all(t.is_active() for t in self._transports)

    def probe(self, timeout: float = 5.0) -> bool:
        """Round-trip a keepalive request to the final host; False if none within ``timeout``."""
        try:
            transport = self.transport
        except SSHError:
            return False
        answered = threading.Event()

        def ask() -> None:
            try:
                transport.global_request("keepalive@openssh.com", wait=True)
                answered.set()  # any reply, even a refusal, proves the path is alive
            except Exception as exc:
                log.debug("keepalive probe failed: %s", exc)

        threading.Thread(target=ask, name="ssh-probe", daemon=True).start()
        return answered.wait(timeout) and transport.is_active()

    def run(self, argv: Sequence[str], *, timeout: float | None = None, check: bool = True,
            input: bytes | str | None = None,  # noqa: A002
            env: Mapping[str, str] | None = None) -> Result:
        """Run ``argv`` on the final host (see :func:`fireflyhpc.ssh.remote.run_command`)."""
        return run_command(self.transport, argv, host=self.spec.alias, timeout=timeout,
                           check=check, input=input, env=env)

    def write_file(self, path: str, data: bytes | str) -> None:
        """Write ``data`` to remote ``path`` atomically, mode 0600 from creation, via stdin
        (so secrets never show on a command line). Raises RemoteCommandError."""
        script = ('umask 077 && tmp=$(mktemp "$1.XXXXXX") && cat > "$tmp" && '
                  'mv -f -- "$tmp" "$1"')
        self.run(["sh", "-c", script, "sh", path], input=data)

    def open_channel_to(self, host: str, port: int, *, timeout: float = 10.0) -> paramiko.Channel:
        """Open a direct-tcpip channel from the final host to ``host:port``.

        Raises ChannelOpenError if the server refuses (e.g. nothing listens there),
        SSHError if the connection is down.
        """
        return _open_direct(self.transport, self.spec.alias, host, port, timeout)

    def connect_to(self, target: str | HostSpec) -> "SSHConnection":
        """Open a second SSH connection to ``target`` through this one (e.g. a compute
        node), resolved in the same ssh_config (what it does not set for ``target``,
        like User or IdentityFile, is this connection's); return it connected.

        It shares this connection's authenticator and host key policy; close it
        yourself, or it is closed with this one.
        """
        spec = target if isinstance(target, HostSpec) else \
            resolve_host(self.config, target, inherit=self.spec)
        child = SSHConnection(spec, authenticator=self.authenticator, host_keys=self.host_keys,
                              config=self.config, parent=self)
        child.connect()
        self._children.append(child)
        return child

    jump = connect_to

    def sftp(self) -> paramiko.SFTPClient:
        """An SFTP client over the final host's transport (a context manager; close it)."""
        try:
            client = paramiko.SFTPClient.from_transport(self.transport)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise SSHError(f"cannot start SFTP on {self.spec.label}: {exc}") from exc
        if client is None:
            raise SSHError(f"cannot start SFTP on {self.spec.label}")
        return client


def _timeout(spec: HostSpec) -> float:
    return float(spec.connect_timeout) if spec.connect_timeout else DEFAULT_CONNECT_TIMEOUT


def _prefer(preferred: Sequence[str], available: Sequence[str]) -> tuple[str, ...]:
    """``preferred`` (those available) first, then the rest of ``available`` in its order."""
    first = [name for name in preferred if name in available]
    return tuple(first + [name for name in available if name not in first])


def _close_quietly(sock: object) -> None:
    try:
        sock.close()  # type: ignore[attr-defined]
    except Exception as exc:
        log.debug("error closing socket: %s", exc)


def _dial(spec: HostSpec) -> object:
    """A connected socket (TCP_NODELAY, keepalive) or ProxyCommand to ``spec``; SSHError if not."""
    if spec.proxy_command:
        try:
            return _ProxyCommand(spec.proxy_command)
        except (paramiko.SSHException, OSError) as exc:
            raise SSHError(f"ProxyCommand for {spec.label} failed: {exc}") from exc
    where = f"{spec.alias} ({spec.hostname} port {spec.port})"
    timeout = _timeout(spec)
    try:
        sock = socket.create_connection((spec.hostname, spec.port), timeout=timeout)
    except socket.gaierror as exc:
        raise SSHError(f"unknown host {spec.hostname!r} (for {spec.alias}): "
                       f"{exc.strerror}") from exc
    except UnicodeError as exc:  # Python's IDNA encoding refuses the name before any lookup
        raise SSHError(f"unknown host {spec.hostname!r} (for {spec.alias}): not a valid host "
                       "name") from exc
    except ConnectionRefusedError as exc:
        raise SSHError(f"connection to {where} refused (is sshd running there?)") from exc
    except (socket.timeout, TimeoutError) as exc:
        raise SSHError(f"connection to {where} timed out after {timeout:g} s") from exc
    except OSError as exc:
        raise SSHError(f"cannot connect to {where}: {exc.strerror or exc}") from exc
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    return sock


def _open_direct(transport: paramiko.Transport, via: str, host: str, port: int,
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
