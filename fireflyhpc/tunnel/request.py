"""What a tunnel is asked for (:class:`TunnelRequest`): plain values, checked in one place."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fireflyhpc.errors import ConfigError
from fireflyhpc.hostspec import host_name, host_spec
from fireflyhpc.settings import HOPS, SSH_BACKENDS
from fireflyhpc.validate import checked, parse_port


@dataclass(frozen=True)
class TunnelRequest:
    """What to forward: ``127.0.0.1:local_port`` -> ``node:remote_port`` via ``login``.

    ``backend`` is the SSH backend (:data:`fireflyhpc.ssh.BACKENDS`) of the login
    connections the tunnel opens itself. ``reuse``, a connection to ``login`` the
    caller owns (:class:`fireflyhpc.ssh.Connection`), carries the tunnel instead:
    the tunnel then rides whatever backend it has, asks nothing new, and leaves
    it open when it closes.
    """

    node: str
    remote_port: int
    login: str
    local_port: int = 0
    hop: str = "auto"
    backend: str = "auto"
    ssh_config: str | None = None
    accept_new_host_key: bool = False
    reuse: Any = field(default=None, compare=False, repr=False)

    def validated(self) -> TunnelRequest:
        """Return self after checking every field; raises ConfigError (one line)."""
        checked(host_name, self.node, "node")
        host_spec(self.login, what="login host")
        parse_port(self.remote_port, what="remote port")
        parse_port(self.local_port, what="local port", allow_zero=True)
        if self.hop not in HOPS:
            raise ConfigError(f"hop must be one of {', '.join(HOPS)}, not {self.hop!r}")
        if self.backend not in SSH_BACKENDS:
            raise ConfigError(f"backend must be one of {', '.join(SSH_BACKENDS)}, "
                              f"not {self.backend!r}")
        return self


__all__ = ["TunnelRequest"]
