"""The SSH layer under everything remote: config, authentication, host keys,
connections through ProxyJump hops, and remote commands quoted in one place."""

from fireflyhpc.ssh.auth import (Authenticator, CallbackPrompter, Prompter, TerminalPrompter,
                                 shared_authenticator)
from fireflyhpc.ssh.config import HostSpec, config_path, read_config, resolve_host
from fireflyhpc.ssh.connection import ChannelOpenError, SSHConnection
from fireflyhpc.ssh.hostkeys import ACCEPT_FLAG, HostKeyChecker, fingerprint
from fireflyhpc.ssh.remote import RemoteTimeoutError, Result, build_command

__all__ = [
    "ACCEPT_FLAG", "Authenticator", "CallbackPrompter", "ChannelOpenError", "HostKeyChecker",
    "HostSpec", "Prompter", "RemoteTimeoutError", "Result", "SSHConnection", "TerminalPrompter",
    "build_command", "config_path", "fingerprint", "read_config", "resolve_host",
    "shared_authenticator",
]
