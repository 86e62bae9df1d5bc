"""From a :class:`TunnelRequest` to a running :class:`Tunnel` (both backends, all hops)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from fireflyhpc.tunnel.engine import Connector, Path, Tunnel
from fireflyhpc.tunnel.listener import Listener
from fireflyhpc.tunnel.request import TunnelRequest

log = logging.getLogger(__name__)

def _login(req: TunnelRequest, cancel: threading.Event | None) -> tuple[Any, bool]:
    """The login connection for a new path and whether the path owns it: the caller's
    (reconnected if it dropped), else a new one."""
    if req.reuse is not None:
        if not req.reuse.is_active():
            req.reuse.reconnect()
        return req.reuse, False
    from fireflyhpc.ssh import open_connection  # the SSH stack loads only when used

    return open_connection(req.login, ssh_config=req.ssh_config,
                           accept_new_host_key=req.accept_new_host_key,
                           backend=req.backend, cancel=cancel), True


def make_connector(req: TunnelRequest, cancel: threading.Event | None = None) -> Connector:
    """A connector for ``req``; the first call settles ``auto`` hop for all later ones.

    Setting ``cancel`` makes a connect in progress give up (OpenSSH backend).
    """
    state: dict[str, Any] = {"hop": req.hop}

    def connect() -> Path:
        login, owned = _login(req, cancel)
        try:
            def build(hop: str) -> Path:
                if login.backend == "openssh":
                    from fireflyhpc.tunnel import openssh
                    return openssh.path_over(login, req.node, req.remote_port, hop,
                                             owned=owned, cancel=cancel)
                from fireflyhpc.tunnel import paramiko_backend
                return paramiko_backend.path_over(login, req, hop, owned=owned)

            if state["hop"] != "auto":
                return build(state["hop"])
            path, hop = _auto(build, req.node)
            state["hop"] = hop
            return path
        except BaseException:
            if owned:
                login.close()
            raise

    return connect


def _auto(build: Callable[[str], Path], node: str) -> tuple[Path, str]:
    """Try the ``ssh`` hop; fall back to ``direct`` if the node does not take SSH.

    Host key problems are never a reason to fall back: they are raised.
    """
    from fireflyhpc.ssh.sshmsg import NodeSSHError

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


__all__ = ["make_connector", "open_tunnel"]
