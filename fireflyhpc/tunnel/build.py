"""From a :class:`TunnelRequest` to a running :class:`Tunnel` (both backends, all hops)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fireflyhpc import validate as v
from fireflyhpc.errors import ConfigError
from fireflyhpc.tunnel import openssh
from fireflyhpc.tunnel.engine import Connector, Path, Tunnel
from fireflyhpc.tunnel.listener import Listener
from fireflyhpc.tunnel.sshmsg import NodeSSHError

log = logging.getLogger(__name__)

HOPS = ("auto", "ssh", "direct")
BACKENDS = ("auto", "openssh", "paramiko")


@dataclass(frozen=True)
class TunnelRequest:
    """What to forward: ``127.0.0.1:local_port`` -> ``node:remote_port`` via ``login``."""

    node: str
    remote_port: int
    login: str
    local_port: int = 0
    hop: str = "auto"
    backend: str = "auto"
    ssh_config: str | None = None
    accept_new_host_key: bool = False
    # An authenticated SSHConnection to ``login`` to carry the tunnel (paramiko backend),
    # so that a user who had to answer a prompt (a one-time code) is not asked again.
    reuse: Any = field(default=None, compare=False, repr=False)

    def validated(self) -> TunnelRequest:
        """Return self after checking every field; raises ConfigError (one line)."""
        v.checked(v.host_name, self.node, "node")
        v.host_spec(self.login, what="login host")
        v.parse_port(self.remote_port, what="remote port")
        v.parse_port(self.local_port, what="local port", allow_zero=True)
        if self.hop not in HOPS:
            raise ConfigError(f"hop must be one of {', '.join(HOPS)}, not {self.hop!r}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, not {self.backend!r}")
        return self


def choose_backend(requested: str) -> str:
    """``openssh`` when asked for or (``auto``) when a system ssh exists, else ``paramiko``.

    Raises ConfigError if ``openssh`` is asked for but not installed.
    """
    if requested == "paramiko":
        return "paramiko"
    if openssh.find_ssh():
        return "openssh"
    if requested == "openssh":
        raise ConfigError("--backend openssh needs the OpenSSH client (ssh), which is not installed")
    return "paramiko"


def make_connector(req: TunnelRequest, cancel: threading.Event | None = None) -> Connector:
    """A connector for ``req``; the first call settles ``auto`` hop for all later ones.

    Setting ``cancel`` makes a connect in progress give up (OpenSSH backend).
    """
    backend = "paramiko" if req.reuse is not None and req.backend == "auto" else \
        choose_backend(req.backend)
    state: dict[str, Any] = {"hop": req.hop}

    def build(hop: str) -> Path:
        if backend == "paramiko" and req.reuse is not None and req.reuse.is_active():
            from fireflyhpc.tunnel import paramiko_backend
            return paramiko_backend.open_path_over(req.reuse, req, hop)
        if backend == "openssh":
            options = openssh.OpenSSHOptions(openssh.find_ssh() or "ssh", req.ssh_config,
                                             req.accept_new_host_key)
            return openssh.open_path(options, req.login, req.node, req.remote_port, hop,
                                     cancel)
        from fireflyhpc.tunnel import paramiko_backend
        if "auth" not in state:  # one per tunnel: keys unlocked once
            from fireflyhpc.ssh import Authenticator
            state["auth"] = req.reuse.authenticator if req.reuse is not None else \
                Authenticator()
        return paramiko_backend.open_path(req, hop, state["auth"])

    def connect() -> Path:
        if state["hop"] != "auto":
            return build(state["hop"])
        path, hop = _auto(build, req.node)
        state["hop"] = hop
        return path

    return connect


def _auto(build: Callable[[str], Path], node: str) -> tuple[Path, str]:
    """Try the ``ssh`` hop; fall back to ``direct`` if the node does not take SSH.

    Host key problems are never a reason to fall back: they are raised.
    """
    try:
        return build("ssh"), "ssh"
    except NodeSSHError as exc:
        if "host key" in str(exc).lower():
            raise
        log.info("the node %s does not accept SSH (%s); using the direct hop", node, exc)
    return build("direct"), "direct"


def open_tunnel(req: TunnelRequest) -> Tunnel:
    """Bind the listener, build the first path, start serving; return the Tunnel.

    Raises ConfigError, TunnelError (port busy) or SSHError; nothing is left
    listening or running when it raises.
    """
    req = req.validated()
    listener = Listener(req.local_port)
    try:
        stopping = threading.Event()
        tunnel = Tunnel(listener, make_connector(req, stopping),
                        target=f"{req.node}:{req.remote_port}", stopping=stopping)
        tunnel.start()
    except BaseException:
        listener.close()
        raise
    return tunnel


__all__ = ["TunnelRequest", "choose_backend", "make_connector", "open_tunnel"]
