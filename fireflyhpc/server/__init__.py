"""The payload web server (``fireflyhpc serve``) and its Python API.

``spawn_server``, ``quit_all_servers``, ``running_servers``, ``ServerHandle`` and
the Firefly-compatible ``spawnFireflyServer``/``quitAllFireflyServers`` live in
:mod:`fireflyhpc.server.api`; they are importable from here. Flask and waitress
are only imported by the process that actually serves.
"""

from __future__ import annotations

from fireflyhpc.server.api import (ServerHandle, quit_all_servers, quitAllFireflyServers,
                                   running_servers, spawn_server, spawnFireflyServer)

__all__ = ["ServerHandle", "quit_all_servers", "quitAllFireflyServers", "running_servers",
           "spawn_server", "spawnFireflyServer"]
