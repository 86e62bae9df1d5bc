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

from fireflyhpc.ssh.auth import (Authenticator, CallbackPrompter, Prompter, TerminalPrompter,
                                 shared_authenticator)
from fireflyhpc.ssh.config import HostSpec, config_path, read_config, resolve_host
from fireflyhpc.ssh.connection import ChannelOpenError, SSHConnection
from fireflyhpc.ssh.factory import BACKENDS, choose_backend, open_connection
from fireflyhpc.ssh.hostkeys import ACCEPT_FLAG, HostKeyChecker, fingerprint
from fireflyhpc.ssh.openssh import OpenSSHConnection
from fireflyhpc.ssh.protocol import Connection, RemoteProcess
from fireflyhpc.ssh.remote import RemoteTimeoutError, Result, build_command

__all__ = [
    "ACCEPT_FLAG", "Authenticator", "BACKENDS", "CallbackPrompter", "ChannelOpenError",
    "Connection", "HostKeyChecker", "HostSpec", "OpenSSHConnection", "Prompter",
    "RemoteProcess", "RemoteTimeoutError", "Result", "SSHConnection", "TerminalPrompter",
    "build_command", "choose_backend", "config_path", "fingerprint", "open_connection",
    "read_config", "resolve_host", "shared_authenticator",
]
