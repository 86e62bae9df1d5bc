"""The chained tunnel: 127.0.0.1:LPORT on the laptop -> login node -> compute node.

:func:`open_tunnel` takes a :class:`TunnelRequest` and returns a running
:class:`Tunnel` (a context manager). The engine (:mod:`.engine`) is independent
of SSH; backends build its paths: :mod:`.openssh` (system ssh, fastest, default
where installed) and :mod:`.paramiko_backend` (pure Python, portable).
"""

from fireflyhpc.tunnel.build import open_tunnel
from fireflyhpc.tunnel.engine import Tunnel
from fireflyhpc.tunnel.request import TunnelRequest

__all__ = ["Tunnel", "TunnelRequest", "open_tunnel"]
