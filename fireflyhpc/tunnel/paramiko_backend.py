"""Paths over the pure-Python SSH backend (:class:`~fireflyhpc.ssh.SSHConnection`).

One connection to the login node (with its own ProxyJump hops, if the config has
any) carries everything; the ``ssh`` hop adds a second connection to the node
chained through it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import paramiko

from fireflyhpc.errors import SSHError
from fireflyhpc.ssh import SSHConnection
from fireflyhpc.ssh.sshmsg import NodeSSHError
from fireflyhpc.tunnel.paramiko_path import (
    OpenFailureLog,
    ParamikoPath,
    direct_tcpip,
    last_open_failure,
    tune_transport,
)

if TYPE_CHECKING:
    from fireflyhpc.tunnel.request import TunnelRequest

log = logging.getLogger(__name__)


def path_over(login: SSHConnection, req: TunnelRequest, hop: str, *,
              owned: bool) -> ParamikoPath:
    """The path for ``hop`` over ``login``, an authenticated connection to the login node.

    ``owned``: closing the path closes ``login`` too (else only the node hop it
    opened; the caller's connection, which may have cost a one-time code, stays).
    Raises NodeSSHError if only the node refused, SSHError otherwise.
    """
    via = f"ssh {req.login}" + ("" if owned else " (the session's own connection)")
    _tune_live(login.transports)
    if hop == "direct":
        transport = login.transport

        def open_direct() -> paramiko.Channel:
            return direct_tcpip(transport, req.node, req.remote_port)

        return ParamikoPath(open_direct, transports=login.transports,
                            on_close=login.close if owned else None,
                            description=f"{via} (paramiko), direct to "
                                        f"{req.node}:{req.remote_port}")
    try:
        node = login.connect_to(req.node)
    except SSHError as exc:
        why = last_open_failure()
        if why:  # the login node could not even reach the node's sshd
            raise NodeSSHError(f"{req.login} cannot reach {req.node} port 22: connect "
                               f"failed: {why}") from exc
        raise NodeSSHError(exc.message, hint=exc.hint) from exc
    _tune_live(node.transports)
    inner = node.transport

    def open_local() -> paramiko.Channel:
        return direct_tcpip(inner, "localhost", req.remote_port)

    # login.close closes the node hop too (a chained connection is its child); when
    # login is borrowed, only the node hop is ours to close.
    return ParamikoPath(open_local, transports=(*login.transports, *node.transports),
                        on_close=login.close if owned else node.close,
                        description=f"{via} -> ssh {req.node} (paramiko), to the node's "
                                    f"localhost:{req.remote_port}")


def _tune_live(transports: tuple[paramiko.Transport, ...]) -> None:
    """Apply our window sizes and TCP_NODELAY to already running transports, and
    route their logs through :class:`OpenFailureLog`.

    The SSH layer picks ciphers at handshake; what is left to tune afterwards is
    what new channels advertise (window, packet size) and the socket.
    """
    for transport in transports:
        tune_transport(transport)
        name = f"paramiko.transport.ffhpc{id(transport):x}"
        transport.set_log_channel(name)
        logger = logging.getLogger(name)
        if not any(isinstance(h, OpenFailureLog) for h in logger.handlers):
            logger.addHandler(OpenFailureLog())
