"""Paths over the project's SSH layer (:mod:`fireflyhpc.ssh`, pure Python, portable).

One :class:`~fireflyhpc.ssh.SSHConnection` to the login node (with its own
ProxyJump hops, if the config has any) is reused for everything; the ``ssh``
hop adds a second connection to the node chained through it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import paramiko

from fireflyhpc.errors import SSHError
from fireflyhpc.ssh import Authenticator, SSHConnection
from fireflyhpc.tunnel.paramiko_path import (
    OpenFailureLog,
    ParamikoPath,
    direct_tcpip,
    last_open_failure,
    tune_transport,
)
from fireflyhpc.tunnel.sshmsg import NodeSSHError

if TYPE_CHECKING:
    from fireflyhpc.tunnel.build import TunnelRequest

log = logging.getLogger(__name__)


def open_path(req: TunnelRequest, hop: str,
              authenticator: Authenticator | None = None) -> ParamikoPath:
    """Connect to the login node (and for ``ssh`` hop the node); return the path.

    Raises SSHError/ConfigError from the SSH layer; NodeSSHError if only the
    node refused. Pass the same ``authenticator`` to every reconnect, so an
    unlocked key or a password is not asked for again.
    """
    login = SSHConnection.open(req.login, ssh_config=req.ssh_config,
                               accept_new_host_key=req.accept_new_host_key,
                               authenticator=authenticator)
    try:
        return _path(login, req, hop, owned=True)
    except BaseException:
        login.close()
        raise


def open_path_over(login: SSHConnection, req: TunnelRequest, hop: str) -> ParamikoPath:
    """Like :func:`open_path`, over ``login``, an authenticated connection the caller
    owns (``connect``'s own, which may have cost the user a one-time code): nothing
    new is asked. Closing the path closes only what it opened (the node hop).
    """
    return _path(login, req, hop, owned=False)


def _path(login: SSHConnection, req: TunnelRequest, hop: str, *, owned: bool) -> ParamikoPath:
    """The path over ``login``; closing it closes ``login`` too if ``owned``."""
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
