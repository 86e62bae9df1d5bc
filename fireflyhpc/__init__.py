"""fireflyhpc: a web visualization on an HPC compute node, in your browser, with one command."""

from fireflyhpc.lazy import lazy_exports

__version__ = "0.1.0"

# fireflyhpc.connect(...): a live session for Python/Jupyter; the local server's API.
# Loaded on first use, so `import fireflyhpc` stays light.
_HOMES = {"connect": "session", "spawn_server": "server.api",
          "quit_all_servers": "server.api", "spawnFireflyServer": "server.api",
          "quitAllFireflyServers": "server.api"}

__all__ = ["__version__", *_HOMES]

__getattr__ = lazy_exports(__name__, _HOMES)
