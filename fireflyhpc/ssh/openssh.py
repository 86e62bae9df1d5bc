"""The user's own ``ssh`` as a :class:`~fireflyhpc.ssh.protocol.Connection`.

One ControlMaster per host carries everything: commands, file writes, long-lived
processes, forwards, and the hop into a compute node (a second master whose
``ProxyCommand`` is a stdio forward ``-W %h:%p`` through the first). Which master:

- the user's own, when their config gives the host a ``ControlPath`` and a master
  answers ``ssh -O check`` there: nothing is asked, and fireflyhpc never closes it;
- otherwise one fireflyhpc starts with the user's config (``--ssh-config``, else
  what ssh reads by default) under a guard that ends it when fireflyhpc ends, even
  by SIGKILL (:mod:`fireflyhpc.ssh.master`).

Questions (passphrases, one-time codes, "touch your key") come from ssh: on the
terminal when there is one and no ``prompter`` was given; otherwise through
:class:`~fireflyhpc.ssh.askpass.AskpassRelay` to the prompter.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import tempfile
import threading
import time
from types import TracebackType
from typing import Mapping, Sequence

from fireflyhpc.errors import SSHError
from fireflyhpc.ssh.askpass import AskpassRelay
from fireflyhpc.ssh.prompts import Prompter, TerminalPrompter
from fireflyhpc.ssh.config import HostSpec, config_path
from fireflyhpc.ssh.master import (
    CONTROL_PREFIX,
    Master,
    OpenSSHOptions,
    check_control,
    find_ssh,
    has_terminal,
    private_dir_base,
)
from fireflyhpc.ssh.openssh_config import (
    destination_args,
    node_options,
    resolve_spec,
    user_master,
)
from fireflyhpc.ssh.openssh_process import (
    KILL_SCRIPT,
    PID_WRAPPER,
    ForwardedStream,
    OpenSSHProcess,
    forward_stream,
    run_mux,
)
from fireflyhpc.ssh.remote import Result, build_command, write_file_argv
from fireflyhpc.ssh.sshmsg import NodeSSHError

log = logging.getLogger(__name__)

# Seconds for which a check of the user's own master that succeeded stands (each check
# is an ``ssh -O check`` process; opening a session asks several times in a row).
USER_MASTER_FRESH = 1.0


class _Shared:
    """What a login connection and the connections chained through it share: the
    private directory (control sockets, askpass) and the askpass relay."""

    def __init__(self, options: OpenSSHOptions, prompter: Prompter | None) -> None:
        self.options = options
        self.prompter = prompter
        self.workdir: str | None = None
        self.relay: AskpassRelay | None = None
        self.masters: list[Master] = []  # every master started, for the relay's context
        self.count = 0
        self._resolved: dict[tuple[str, ...], tuple[HostSpec, dict[str, list[str]]]] = {}

    def resolve(self, target: str, extra: Sequence[str] = ()
                ) -> tuple[HostSpec, dict[str, list[str]]]:
        """:func:`resolve_spec` once per destination and options (the config does not
        change while fireflyhpc runs)."""
        key = (target, *extra)
        if key not in self._resolved:
            self._resolved[key] = resolve_spec(self.options, target, extra)
        return self._resolved[key]

    def directory(self) -> str:
        """The private (0700) directory, made on first use."""
        if self.workdir is None:
            base = private_dir_base(tempfile.gettempdir())
            self.workdir = tempfile.mkdtemp(prefix="ffhpc-ssh-", dir=base)
        return self.workdir

    def control(self) -> str:
        """A fresh control socket path in the private directory."""
        self.count += 1
        return os.path.join(self.directory(), f"{CONTROL_PREFIX}{self.count}")

    def env(self) -> dict[str, str]:
        """ssh's environment: questions go to the relay unless ssh asks on the terminal."""
        if self.prompter is None and has_terminal():
            return {}
        if self.relay is None:
            self.relay = AskpassRelay(self.directory(), self.prompter or TerminalPrompter(),
                                      context=self._messages)
        return self.relay.env()

    def _messages(self) -> str:
        return "\n".join(text for m in self.masters if (text := m.take_messages()))

    def close(self) -> None:
        if self.relay is not None:
            self.relay.close()
            self.relay = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


class OpenSSHConnection:
    """A connection through a ControlMaster (see the module doc). Implements
    :class:`fireflyhpc.ssh.protocol.Connection`."""

    backend = "openssh"

    def __init__(self, spec: HostSpec, target: str, shared: _Shared, *,
                 found: Mapping[str, Sequence[str]] | None = None, extra: Sequence[str] = (),
                 parent: "OpenSSHConnection | None" = None) -> None:
        self.spec = spec
        self.target = target
        self._found = found or {}  # what ``ssh -G`` said about the host
        self.parent = parent
        self._shared = shared
        self._extra = list(extra)  # -o options for this host (ProxyCommand, inherited User...)
        self._control: str | None = None
        self._master: Master | None = None  # None: the user's own master (or none yet)
        self._children: list[OpenSSHConnection] = []
        self._uses = 1  # a node connection is shared by those who asked for it (connect_to)
        self._answered = -USER_MASTER_FRESH  # monotonic time the user's master last answered
        self._lock = threading.Lock()

    @classmethod
    def open(cls, target: str, *, ssh_config: str | None = None,
             accept_new_host_key: bool = False, prompter: Prompter | None = None,
             ssh: str | None = None,
             cancel: threading.Event | None = None) -> "OpenSSHConnection":
        """Resolve ``target`` with the user's ssh and connect (see the module doc).

        Setting ``cancel`` abandons the connect. Raises ConfigError (bad config or
        destination), SSHError (ssh's reason, one line).
        """
        binary = ssh or find_ssh()
        if binary is None:
            raise SSHError("the OpenSSH client (ssh) is not installed",
                           hint="install it, or choose the Python fallback with --ssh paramiko")
        path = config_path(ssh_config) if ssh_config else None
        options = OpenSSHOptions(binary, str(path) if path else None)
        spec, found = resolve_spec(options, target)
        strict = _strict_policy(spec.strict_host_key_checking, accept_new_host_key,
                                relaying=prompter is not None or not has_terminal())
        options = OpenSSHOptions(binary, options.ssh_config, strict)
        conn = cls(spec, target, _Shared(options, prompter), found=found)
        conn._control = user_master(options, found)
        if conn._control is not None:  # it has just answered -O check
            conn._answered = time.monotonic()
            log.info("using your own ssh master for %s (%s)", spec.alias, conn._control)
            return conn
        try:
            conn._start(cancel)
        except BaseException:
            conn.close()
            raise
        return conn

    # -- the master -------------------------------------------------------------------
    def _start(self, cancel: threading.Event | None = None) -> None:
        shared = self._shared
        control = shared.control()
        env = shared.env()
        if shared.relay is not None:
            shared.relay.failure = None  # a reconnect reports its own reasons
        try:
            master = Master([*shared.options.master(control), *self._extra,
                             *destination_args(self.target)], control, self.spec.alias, env)
            shared.masters.append(master)
            master.wait_ready(shared.options.mux(control), cancel=cancel)
        except SSHError:
            if shared.relay is not None:
                shared.relay.raise_failure()  # "no terminal to ask on" beats "Permission denied"
            raise
        self._control, self._master = control, master

    @property
    def control(self) -> str:
        """The control socket of this connection's master; SSHError if not connected."""
        if self._control is None:
            raise SSHError(f"not connected to {self.spec.label}")
        return self._control

    @property
    def master(self) -> Master | None:
        """The master fireflyhpc started for this host; None when the user's own is used."""
        return self._master

    @property
    def owns_master(self) -> bool:
        """True if fireflyhpc started this connection's master (False: the user's own)."""
        return self._master is not None

    def mux(self) -> list[str]:
        """Argv prefix of a client of this connection's master."""
        return self._shared.options.mux(self.control)

    @property
    def asked_user(self) -> bool:
        relay = self._shared.relay
        return bool(relay is not None and relay.asked) or any(
            m.used_interactive_auth() for m in self._shared.masters)

    def is_active(self) -> bool:
        if self._control is None or (self.parent is not None and not self.parent.is_active()):
            return False
        if self._master is not None:  # ours: keepalive ends it within seconds of a loss
            return self._master.alive() and os.path.exists(self._control)
        # The user's own: ask it (a process each time), unless it answered just now.
        if time.monotonic() - self._answered < USER_MASTER_FRESH:
            return True
        if check_control(self.mux()):
            self._answered = time.monotonic()
            return True
        return False

    def probe(self, timeout: float = 5.0) -> bool:
        return self._control is not None and check_control(self.mux(), timeout)

    # -- commands ---------------------------------------------------------------------
    def run(self, argv: Sequence[str], *, timeout: float | None = None, check: bool = True,
            input: bytes | str | None = None,  # noqa: A002
            env: Mapping[str, str] | None = None) -> Result:
        """Run ``argv``; see :meth:`fireflyhpc.ssh.protocol.Connection.run`."""
        command = build_command(["sh", "-c", PID_WRAPPER, "sh", *build_argv(argv, env)])
        log.debug("%s$ %s", self.spec.alias, build_command(argv, env))
        return run_mux(self.mux(), command, argv, host=self.spec.alias, timeout=timeout,
                       check=check, input=input, alive=self.probe, kill=self._kill)

    def _kill(self, pid: int) -> None:
        try:
            run_mux(self.mux(), build_command(["sh", "-c", KILL_SCRIPT, "sh", str(pid)]),
                    ["kill", str(pid)], host=self.spec.alias, timeout=30, check=False,
                    input=None, alive=self.probe, kill=lambda _: None)
        except SSHError as exc:
            log.debug("could not stop the remote command %d: %s", pid, exc)

    def write_file(self, path: str, data: bytes | str) -> None:
        """Write ``data`` to remote ``path`` atomically, mode 0600, through stdin."""
        self.run(write_file_argv(path), input=data)

    def start(self, argv: Sequence[str], *,
              env: Mapping[str, str] | None = None) -> OpenSSHProcess:
        """Start ``argv``; see :class:`~fireflyhpc.ssh.protocol.RemoteProcess`."""
        return OpenSSHProcess(self.mux(), build_command(argv, env), argv, self.spec.alias,
                              alive=self.probe)

    def open_channel_to(self, host: str, port: int, *,
                        timeout: float = 10.0) -> ForwardedStream:
        """A stream to ``host:port`` from this host; ChannelOpenError if refused."""
        master = self._master
        if master is None:  # the user's own master: its log is not ours to read
            return forward_stream(self.mux(), self.spec.alias, host, port, timeout)
        mark = master.lines_seen()
        return forward_stream(self.mux(), self.spec.alias, host, port, timeout,
                              reason=lambda: master.open_failure(mark))

    def forward_argv(self, host: str, port: int) -> list[str]:
        """A client that forwards its stdin/stdout to ``host:port`` (``ssh -W``)."""
        return [*self.mux(), "-W", f"{host}:{port}", "--", "mux"]

    # -- chaining ---------------------------------------------------------------------
    def connect_to(self, target: str,
                   cancel: threading.Event | None = None) -> "OpenSSHConnection":
        """A master to ``target`` whose ProxyCommand is a ``-W`` forward through this one.

        While it is up, asking again for the same target returns the same connection
        (one more use: each :meth:`close` gives one back, the last one ends it), so the
        session's commands on a node and the tunnel into it share one login there.
        """
        with self._lock:
            for child in self._children:
                if child.target == target and child.is_active():
                    child._uses += 1
                    return child
        proxy = shlex.join([*self.mux(), "-W", "%h:%p", "--", "mux"])
        # One ``ssh -G`` with the ProxyCommand (which wins over a ProxyJump in the
        # config: no hops to resolve); a second only when the node takes over options
        # from the login host (node_options reads nothing the ProxyCommand changes).
        extra = ["-o", f"ProxyCommand={proxy}"]
        spec, found = self._shared.resolve(target, extra)
        inherited = node_options(found, self._found)
        if inherited:
            extra += inherited
            spec, found = self._shared.resolve(target, extra)
        child = OpenSSHConnection(spec, target, self._shared, found=found, extra=extra,
                                  parent=self)
        mark = self._master.lines_seen() if self._master else 0
        try:
            child._start(cancel)
        except SSHError as exc:
            why = self._master.last_open_failure(mark) if self._master else None
            if why:  # the login node could not even reach the node's sshd
                raise NodeSSHError(f"{self.spec.alias} cannot reach {target} port "
                                   f"{spec.port}: {why}") from exc
            raise NodeSSHError(exc.message, hint=exc.hint) from exc
        self._children.append(child)
        return child

    # -- lifecycle --------------------------------------------------------------------
    def reconnect(self, cancel: threading.Event | None = None) -> None:
        """Close chained connections and the master we started; connect again (to
        the user's master if one is live now). Asks again if ssh needs to."""
        self._shut()
        with self._lock:
            if self.parent is None:
                self._control = user_master(self._shared.options, self._found)
                if self._control is not None:
                    return
            self._start(cancel)

    def close(self) -> None:
        """Close chained connections and the master we started (never the user's own);
        for a shared node connection, give back one use (the last one closes it)."""
        if self.parent is not None:
            with self.parent._lock:
                self._uses -= 1
                if self._uses > 0:
                    return
                if self in self.parent._children:
                    self.parent._children.remove(self)
        self._shut()
        if self.parent is None:
            self._shared.close()

    def _shut(self) -> None:
        with self._lock:
            children, self._children = self._children, []
        for child in children:
            child._uses = 0
            child._shut()
        master, self._master = self._master, None
        if master is not None:
            master.close()
            self._control = None

    def __enter__(self) -> "OpenSSHConnection":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def build_argv(argv: Sequence[str], env: Mapping[str, str] | None) -> list[str]:
    """``argv`` with an ``env K=V`` prefix for ``env`` (validated by build_command)."""
    build_command(argv, env)
    return ["env", *(f"{k}={v}" for k, v in env.items()), *argv] if env else list(argv)


def _strict_policy(configured: str, accept_new: bool, *, relaying: bool) -> str | None:
    """StrictHostKeyChecking to force on our masters (pure).

    ``--accept-new-host-key`` -> accept-new. A config's ``no`` is raised to accept-new:
    a changed key is always refused. ``ask`` becomes ``yes`` when ssh could not ask
    on a terminal (the refusal names the fingerprint and the flag). Otherwise the
    config's own value stands (None).
    """
    if accept_new or configured == "no":
        return "accept-new"
    if configured == "ask" and relaying:
        return "yes"
    return None


__all__ = ["OpenSSHConnection"]
