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
import threading
from types import TracebackType
from typing import Mapping, Sequence

import paramiko

from fireflyhpc.errors import SSHError
from fireflyhpc.ssh.auth import Authenticator, Prompter, shared_authenticator
from fireflyhpc.ssh.config import HostSpec, config_path, read_config, resolve_host
from fireflyhpc.ssh.hostkeys import HostKeyChecker
from fireflyhpc.ssh.paramiko_exec import ParamikoProcess, run_command
from fireflyhpc.ssh.remote import Result, build_command, write_file_argv
from fireflyhpc.ssh.wire import (MAX_PACKET_SIZE, PARAMIKO_LOG, PREFERRED_CIPHERS, PREFERRED_MACS,
                                 WINDOW_SIZE, ChannelOpenError, Transport, close_quietly,
                                 connect_timeout, dial, open_direct, prefer)

log = logging.getLogger(__name__)

__all__ = ["ChannelOpenError", "SSHConnection", "PREFERRED_CIPHERS"]


class SSHConnection:
    """An SSH connection to ``spec`` (through its hops, or through ``parent``).

    Use as a context manager, or call :meth:`connect` and :meth:`close`. All methods
    raise SSHError when the connection is not up or breaks. Implements
    :class:`fireflyhpc.ssh.protocol.Connection` (the pure-Python backend).
    """

    backend = "paramiko"

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
                                                   timeout=connect_timeout(spec))
            else:
                sock = dial(spec)
            self._transports.append(self._handshake(sock, spec))
            previous = spec

    def _channel(self, transport: paramiko.Transport, via: HostSpec | None,
                 spec: HostSpec) -> paramiko.Channel:
        return open_direct(transport, via.alias if via else "?", spec.hostname, spec.port,
                            connect_timeout(spec))

    def _handshake(self, sock: object, spec: HostSpec) -> paramiko.Transport:
        """Key exchange, host key check and authentication on ``sock``; closes it on failure."""
        try:
            transport = Transport(sock, default_window_size=WINDOW_SIZE,
                                  default_max_packet_size=MAX_PACKET_SIZE)
        except Exception:
            close_quietly(sock)
            raise
        try:
            transport.set_log_channel(PARAMIKO_LOG)
            options = transport.get_security_options()
            options.ciphers = prefer(PREFERRED_CIPHERS, options.ciphers)
            options.digests = prefer(PREFERRED_MACS, options.digests)
            options.key_types = self.host_keys.preferred_key_types(spec, tuple(options.key_types))
            transport.banner_timeout = transport.handshake_timeout = connect_timeout(spec)
            try:
                transport.start_client(timeout=connect_timeout(spec))
            except (paramiko.SSHException, EOFError, OSError) as exc:
                hint = "is an SSH server listening there?" if "banner" in str(exc) else None
                raise SSHError(f"SSH handshake with {spec.label} failed: "
                               f"{exc or type(exc).__name__}", hint=hint) from exc
            if not (transport.is_active() and getattr(transport, "initial_kex_done", True)):
                raise SSHError(f"SSH handshake with {spec.label} failed: no answer within "
                               f"{connect_timeout(spec):g} s")
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
        self.run(write_file_argv(path), input=data)

    def start(self, argv: Sequence[str], *,
              env: Mapping[str, str] | None = None) -> ParamikoProcess:
        """Start ``argv`` in a channel of its own; see :class:`~fireflyhpc.ssh.protocol.RemoteProcess`."""
        return ParamikoProcess(self.transport, argv, build_command(argv, env), self.spec.alias)

    @property
    def asked_user(self) -> bool:
        """True once this connection's authenticator asked the user anything."""
        return self.authenticator.asked_user

    def open_channel_to(self, host: str, port: int, *, timeout: float = 10.0) -> paramiko.Channel:
        """Open a direct-tcpip channel from the final host to ``host:port``.

        Raises ChannelOpenError if the server refuses (e.g. nothing listens there),
        SSHError if the connection is down.
        """
        return open_direct(self.transport, self.spec.alias, host, port, timeout)

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
