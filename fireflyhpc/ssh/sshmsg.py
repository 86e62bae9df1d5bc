"""Turn what the OpenSSH client printed (with ``-v``) into one clear SSHError (pure).

The one place that reads ssh's stderr: the connection (:mod:`fireflyhpc.ssh.openssh`)
and the tunnel (:mod:`fireflyhpc.tunnel.openssh`) both report failures through it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from fireflyhpc.errors import SSHError

ACCEPT_FLAG = "--accept-new-host-key"


class ChannelOpenError(SSHError):
    """The server refused to open a forwarded (direct-tcpip) channel.

    ``code`` is the SSH reason code (2: the target refused or is unreachable).
    """

    def __init__(self, message: str, *, code: int, reason: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


class NodeSSHError(SSHError):
    """The login node was reached, but the SSH session into the compute node failed."""


_FINGERPRINT = re.compile(r"Server host key: (\S+) (SHA256:\S+)")


def ssh_error_from_stderr(label: str, lines: Sequence[str]) -> SSHError:
    """Return the SSHError that explains why ``ssh`` to ``label`` failed.

    ``lines`` is the client's stderr (``-v`` debug lines included; they are
    used for the host key fingerprint and otherwise ignored).
    """
    text = [line.strip() for line in lines if line.strip()]
    plain = [line for line in text if not line.startswith("debug")]
    fingerprint = None
    for line in text:
        match = _FINGERPRINT.search(line)
        if match:
            fingerprint = f"{match.group(1)} {match.group(2)}"
    joined = "\n".join(plain)
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in joined or "has changed and you have" in joined:
        return SSHError(f"HOST KEY CHANGED for {label}: it offered {fingerprint or 'a key'}, "
                        "which differs from the one in known_hosts; someone may be intercepting "
                        "the connection (man-in-the-middle attack), or the host was "
                        "reinstalled; refusing to connect",
                        hint="if you are sure the new key is right, remove the old one from "
                             "known_hosts (ssh-keygen -R HOST)")
    if "host key is known for" in joined or "Host key verification failed" in joined:
        shown = f": {fingerprint}" if fingerprint else ""
        return SSHError(f"host key for {label} is not known{shown}; refusing to connect",
                        hint=f"check the fingerprint with your admins, then run again with "
                             f"{ACCEPT_FLAG} to trust it")
    for pattern, message in _KNOWN:
        for line in plain:
            match = re.search(pattern, line)
            if match:
                said = message.format(*match.groups(), label=label)
                return SSHError(said.replace(f" (for {label})", "")
                                if match.group(1) == label else said)
    last = plain[-1] if plain else "ssh exited without saying why"
    return SSHError(f"ssh to {label} failed: {last}")


_KNOWN: list[tuple[str, str]] = [
    (r"Could not resolve hostname (\S+?):", "unknown host {0!r} (for {label})"),
    (r"connect to host (\S+) port (\d+): Connection refused",
     "connection to {0} port {1} refused (for {label}; is sshd running there?)"),
    (r"connect to host (\S+) port (\d+): (.*)", "cannot connect to {0} port {1} ({label}): {2}"),
    (r"Permission denied \((.*)\)", "authentication failed for {label} (tried: {0})"),
    (r"(Too many authentication failures)", "authentication failed for {label}: {0}"),
    (r"kex_exchange_identification: (.*)",
     "SSH handshake with {label} failed: {0} (is an SSH server listening there?)"),
    (r"banner exchange: .*: (invalid format)",
     "SSH handshake with {label} failed: {0} (is an SSH server listening there?)"),
    (r"(Connection timed out during banner exchange)", "{label}: {0}"),
    (r"(Connection closed by .*)", "{label}: {0}"),
]
