"""The SSH layer under everything remote: config, authentication, host keys,
connections through ProxyJump hops, and remote commands quoted in one place.

Typical use::

    with SSHConnection.open("login1", ssh_config=app.ssh_config,
                            accept_new_host_key=flag) as login:
        login.run(["squeue", "-h", "-j", job_id])          # Result(argv, exit_code, ...)
        node = login.connect_to("node1")                    # SSH into a node via login1
        channel = node.open_channel_to("localhost", 8080)   # direct-tcpip from the node
        login.transport                                     # paramiko.Transport of login1

Everything raises :class:`~fireflyhpc.errors.SSHError` (connect, auth, host keys),
:class:`~fireflyhpc.errors.RemoteCommandError` (a command failed) or
:class:`~fireflyhpc.errors.ConfigError` (bad ssh_config or destination).
"""

from fireflyhpc.ssh.auth import (Authenticator, CallbackPrompter, Prompter, TerminalPrompter,
                                 shared_authenticator)
from fireflyhpc.ssh.config import HostSpec, config_path, read_config, resolve_host
from fireflyhpc.ssh.connection import ChannelOpenError, SSHConnection
from fireflyhpc.ssh.hostkeys import ACCEPT_FLAG, HostKeyChecker, fingerprint
from fireflyhpc.ssh.remote import RemoteTimeoutError, Result, RunningCommand, build_command

__all__ = [
    "ACCEPT_FLAG", "Authenticator", "CallbackPrompter", "ChannelOpenError", "HostKeyChecker",
    "HostSpec", "Prompter", "RemoteTimeoutError", "Result", "SSHConnection", "TerminalPrompter",
    "build_command", "config_path", "fingerprint", "read_config", "resolve_host",
    "shared_authenticator", "RunningCommand",
]
