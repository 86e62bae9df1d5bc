"""Which SSH backend carries a connection, and the one way to open one.

``auto`` (the default) uses the user's own OpenSSH client wherever it can
multiplex (``ControlMaster``: Linux, macOS, BSD; not Windows' port) and can ask
its questions here: on a terminal, or through askpass (OpenSSH 8.4 and newer).
Everywhere else, and when asked for with ``paramiko``, the pure-Python backend.
"""

from __future__ import annotations

import logging
import threading

from fireflyhpc.errors import ConfigError
from fireflyhpc.settings import SSH_BACKENDS as BACKENDS
from fireflyhpc.ssh.prompts import Prompter
from fireflyhpc.ssh.config import HostSpec
from fireflyhpc.ssh.master import can_multiplex, find_ssh, has_terminal, ssh_version
from fireflyhpc.ssh.protocol import Connection

log = logging.getLogger(__name__)

ASKPASS_FORCE_VERSION = (8, 4)  # SSH_ASKPASS_REQUIRE=force


def choose_backend(requested: str = "auto", *, prompter: Prompter | None = None) -> str:
    """``openssh`` or ``paramiko`` for ``requested`` (auto, openssh or paramiko).

    Raises ConfigError for an unknown name, or ``openssh`` without a usable client.
    """
    if requested not in BACKENDS:
        raise ConfigError(f"ssh backend must be one of {', '.join(BACKENDS)}, not {requested!r}")
    if requested == "paramiko":
        return "paramiko"
    ssh = find_ssh()
    if not can_multiplex(ssh):
        if requested == "openssh":
            raise ConfigError("--ssh openssh needs the OpenSSH client (ssh) with connection "
                              "multiplexing, which is not available here",
                              hint="install OpenSSH, or use --ssh paramiko")
        log.info("no OpenSSH client that can multiplex: using the Python SSH fallback")
        return "paramiko"
    assert ssh is not None
    version = ssh_version(ssh) or (0, 0)
    if requested == "auto" and (prompter is not None or not has_terminal()) \
            and version < ASKPASS_FORCE_VERSION:
        log.info("OpenSSH %d.%d cannot relay questions without a terminal (8.4 can): using "
                 "the Python SSH fallback", *version)
        return "paramiko"
    return "openssh"


def open_connection(target: str, *, ssh_config: str | None = None,
                    accept_new_host_key: bool = False, prompter: Prompter | None = None,
                    backend: str = "auto", cancel: threading.Event | None = None) -> Connection:
    """Connect to ``target`` (an ssh_config alias or ``[user@]host[:port]``).

    ``ssh_config`` replaces ~/.ssh/config; ``accept_new_host_key`` trusts and records
    an unknown (never a changed) host key; ``prompter`` answers questions (default:
    ssh asks on the terminal, or the notebook's input); ``backend``: see
    :func:`choose_backend`; setting ``cancel`` abandons a connect in progress
    (OpenSSH). Raises ConfigError or SSHError.
    """
    if choose_backend(backend, prompter=prompter) == "openssh":
        from fireflyhpc.ssh.openssh import OpenSSHConnection

        return OpenSSHConnection.open(target, ssh_config=ssh_config,
                                      accept_new_host_key=accept_new_host_key, prompter=prompter,
                                      cancel=cancel)
    from fireflyhpc.ssh.connection import SSHConnection

    return SSHConnection.open(target, ssh_config=ssh_config,
                              accept_new_host_key=accept_new_host_key, prompter=prompter)


def describe_host(target: str, *, ssh_config: str | None = None,
                  backend: str = "auto") -> HostSpec:
    """How ``target`` resolves (host name, port, user, known_hosts, hops) as the chosen
    backend reads the config: ``ssh -G`` for OpenSSH, fireflyhpc's own parser for
    paramiko. Nothing is dialled. Raises ConfigError."""
    from fireflyhpc.ssh.config import config_path, read_config, resolve_host

    if choose_backend(backend) == "openssh":
        from fireflyhpc.ssh.master import OpenSSHOptions
        from fireflyhpc.ssh.openssh_config import resolve_spec

        path = config_path(ssh_config) if ssh_config else None
        options = OpenSSHOptions(find_ssh() or "ssh", str(path) if path else None)
        return resolve_spec(options, target)[0]
    return resolve_host(read_config(config_path(ssh_config)), target)


__all__ = ["BACKENDS", "choose_backend", "describe_host", "open_connection"]
