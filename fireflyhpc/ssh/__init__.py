"""The SSH layer under everything remote: connections, remote commands quoted in one
place, long-lived remote processes, hops into compute nodes.

Two backends implement one :class:`Connection` protocol: the user's own OpenSSH
client (:class:`OpenSSHConnection`, the default wherever it can multiplex) and a
pure-Python one over paramiko (:class:`SSHConnection`: config, authentication,
host keys and ProxyJump hops of its own). Typical use::

    with open_connection("login1", ssh_config=app.ssh_config,
                         accept_new_host_key=flag, backend="auto") as login:
        login.run(["squeue", "-h", "-j", job_id])          # Result(argv, exit_code, ...)
        proc = login.start(["sh", "-c", HOLD_SCRIPT])       # a long-lived remote process
        node = login.connect_to("node1")                    # SSH into a node via login1
        stream = node.open_channel_to("localhost", 8080)    # a stream from the node

Everything raises :class:`~fireflyhpc.errors.SSHError` (connect, auth, host keys),
:class:`~fireflyhpc.errors.RemoteCommandError` (a command failed) or
:class:`~fireflyhpc.errors.ConfigError` (bad ssh_config or destination).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fireflyhpc.lazy import lazy_exports

# Where each public name lives. Loaded on first use (PEP 562), so that the OpenSSH
# backend never imports paramiko, and the payload side never loads SSH at all.
_HOMES = {
    "Authenticator": "auth", "shared_authenticator": "auth",
    "CallbackPrompter": "prompts", "Prompter": "prompts", "TerminalPrompter": "prompts",
    "HostSpec": "config", "config_path": "config", "read_config": "config",
    "resolve_host": "config",
    "SSHConnection": "connection",
    "BACKENDS": "factory", "choose_backend": "factory", "open_connection": "factory",
    "ACCEPT_FLAG": "sshmsg", "ChannelOpenError": "sshmsg",
    "HostKeyChecker": "hostkeys", "fingerprint": "hostkeys",
    "OpenSSHConnection": "openssh",
    "Connection": "protocol", "RemoteProcess": "protocol",
    "RemoteTimeoutError": "remote", "Result": "remote", "build_command": "remote",
}

__all__ = sorted(_HOMES)


__getattr__ = lazy_exports(__name__, _HOMES)

if TYPE_CHECKING:
    from fireflyhpc.ssh.auth import Authenticator, shared_authenticator
    from fireflyhpc.ssh.config import HostSpec, config_path, read_config, resolve_host
    from fireflyhpc.ssh.connection import SSHConnection
    from fireflyhpc.ssh.factory import BACKENDS, choose_backend, open_connection
    from fireflyhpc.ssh.hostkeys import HostKeyChecker, fingerprint
    from fireflyhpc.ssh.openssh import OpenSSHConnection
    from fireflyhpc.ssh.prompts import CallbackPrompter, Prompter, TerminalPrompter
    from fireflyhpc.ssh.protocol import Connection, RemoteProcess
    from fireflyhpc.ssh.remote import RemoteTimeoutError, Result, build_command
    from fireflyhpc.ssh.sshmsg import ACCEPT_FLAG, ChannelOpenError
