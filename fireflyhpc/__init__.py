"""fireflyhpc: a web visualization on an HPC compute node, in your browser, with one command."""

from typing import Any

__version__ = "0.1.0"

# Served lazily from fireflyhpc.server, so `import fireflyhpc` stays light.
_SERVER_API = ("spawn_server", "quit_all_servers", "spawnFireflyServer", "quitAllFireflyServers")

__all__ = ["__version__", "connect", *_SERVER_API]


def __getattr__(name: str) -> Any:
    if name == "connect":  # fireflyhpc.connect(...): a live session for Python/Jupyter
        from fireflyhpc.session import connect

        return connect
    if name in _SERVER_API:
        from fireflyhpc.server import api

        return getattr(api, name)
    raise AttributeError(f"module 'fireflyhpc' has no attribute {name!r}")
