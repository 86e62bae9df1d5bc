"""Where the notebook's browser reaches a payload server: directly, or through the
Jupyter server's own proxy route.

A kernel that runs on a cluster node (Open OnDemand's JupyterLab, a JupyterHub)
shows its frame in a browser on the user's laptop, which reaches the Jupyter
server (through the Hub, or a tunnel of its own) but not the node's
``127.0.0.1``. jupyter-server-proxy forwards ``<base_url>proxy/<port>/...`` to
``localhost:<port>`` for logged-in Jupyter users, so the frame points there and
the payload's own ticket and token checks still apply behind it.

What can be relied on (jupyter_server 2, jupyter_client 8, classic notebook 6):

- ``JPY_PARENT_PID``: jupyter_client's launcher sets it in every kernel it starts
  on its own machine, to its own pid, i.e. the Jupyter server's. (Kernels started
  by a gateway elsewhere do not have it; no proxy route reaches them anyway.)
- The server's info file, ``jpserver-<pid>.json`` (``nbserver-<pid>.json`` for
  the classic notebook) in the Jupyter runtime directory (``$JUPYTER_RUNTIME_DIR``,
  else ``$JUPYTER_DATA_DIR/runtime``, else ``~/.local/share/jupyter/runtime``),
  the files ``jupyter_server.serverapp.list_running_servers`` reads: ``url``,
  ``base_url`` and ``token``. Matching its pid to ``JPY_PARENT_PID`` picks the
  right server among several.
- ``JUPYTERHUB_SERVICE_PREFIX`` is a JupyterHub single-user server's base URL,
  used when no info file is found.
- Whether the proxy is enabled is asked of the server itself: a GET of
  ``<url>proxy/<port>/_frame`` (with the server's token) reaches the payload's
  ticket endpoint (405, ``Allow: POST``, ``Server: fireflyhpc``) only through a
  working proxy. When the server cannot be asked (no token in its file: a
  password or Hub login), the answer is whether ``jupyter_server_proxy`` is
  importable here (usually the server's own environment).

The proxy route is a path on the notebook page's own origin, so it serves pages
of that origin (JupyterLab, Notebook, JupyterHub, Open OnDemand), not a VS Code
webview attached to a remote server: there, ``fireflyhpc tunnel`` is the way.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import warnings
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 5.0
# Signs that the Jupyter server runs somewhere the user's browser is not.
_REMOTE_SIGNS = ("JUPYTERHUB_SERVICE_PREFIX", "SLURM_JOB_ID", "SSH_CONNECTION")
_warned: set[int] = set()  # ports already warned about (once per server is enough)


@dataclass(frozen=True)
class JupyterServer:
    """The Jupyter server this kernel runs under."""

    base_url: str  # the path prefix of its pages, "/" or "/user/me/"
    url: str | None = None  # how this machine reaches it, when known
    token: str = ""
    pid: int | None = None


def runtime_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """Jupyter's runtime directory (where servers write their info files)."""
    if environ.get("JUPYTER_RUNTIME_DIR"):
        return Path(environ["JUPYTER_RUNTIME_DIR"])
    if environ.get("JUPYTER_DATA_DIR"):
        return Path(environ["JUPYTER_DATA_DIR"]) / "runtime"
    try:
        from jupyter_core.paths import jupyter_runtime_dir

        return Path(jupyter_runtime_dir())
    except ImportError:
        return Path.home() / ".local" / "share" / "jupyter" / "runtime"


def _slash(path: str) -> str:
    path = path if path.startswith("/") else "/" + path
    return path if path.endswith("/") else path + "/"


def find_jupyter(environ: Mapping[str, str] = os.environ) -> JupyterServer | None:
    """The Jupyter server that started this kernel, or None when not under one."""
    parent = environ.get("JPY_PARENT_PID", "")
    if parent.isdigit():
        directory = runtime_dir(environ)
        for prefix in ("jpserver", "nbserver"):
            info_file = directory / f"{prefix}-{parent}.json"
            try:
                info = json.loads(info_file.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(info, dict) and info.get("pid") == int(parent):
                return JupyterServer(_slash(str(info.get("base_url") or "/")),
                                     str(info.get("url") or "") or None,
                                     str(info.get("token") or ""), int(parent))
    if environ.get("JUPYTERHUB_SERVICE_PREFIX"):
        return JupyterServer(_slash(environ["JUPYTERHUB_SERVICE_PREFIX"]))
    return None


def proxy_works(server: JupyterServer, port: int) -> bool | None:
    """Ask ``server`` whether ``<base_url>proxy/<port>/`` reaches our payload:
    True or False, None when it cannot be asked."""
    if not server.url or not server.token:
        return None
    parts = urlsplit(server.url)
    if parts.scheme != "http" or not parts.hostname:
        return None  # https with its own certificate: not worth a verification bypass
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=PROBE_TIMEOUT)
    try:
        conn.request("GET", f"{_slash(parts.path)}proxy/{port}/_frame",
                     headers={"Authorization": f"token {server.token}"})
        response = conn.getresponse()
        response.read()
    except OSError as exc:
        log.debug("cannot ask the Jupyter server at %s: %s", server.url, exc)
        return None
    finally:
        conn.close()
    ours = response.status == 405 and response.getheader("Server", "") == "fireflyhpc"
    if ours:
        return True
    return False if response.status == 404 else None


def _proxy_installed() -> bool:
    try:
        return find_spec("jupyter_server_proxy") is not None
    except (ImportError, ValueError):
        return False


def frame_base(server_url: str, environ: Mapping[str, str] = os.environ,
               proxy: bool | None = None) -> str:
    """The URL (or, through the proxy, the path) the notebook's browser should use
    for the payload at ``server_url`` (a loopback URL as this kernel reaches it).

    ``proxy``: None decides (the proxy route when the kernel runs under a Jupyter
    server whose proxy reaches the payload), True insists (ConfigError without a
    Jupyter server), False never. Without the proxy on a Jupyter server that looks
    remote, one warning (once per server) says what to do.
    """
    from fireflyhpc.errors import ConfigError
    from fireflyhpc.server.runner import is_loopback

    parts = urlsplit(server_url)
    port = parts.port
    jupyter = find_jupyter(environ) if proxy is not False else None
    if proxy and jupyter is None:
        raise ConfigError("proxy=True, but this kernel runs under no Jupyter server "
                          "that fireflyhpc can find (no JPY_PARENT_PID server info file, "
                          "no JUPYTERHUB_SERVICE_PREFIX)")
    host = parts.hostname or ""
    if jupyter is None or port is None or not (host == "localhost" or is_loopback(host)):
        return server_url
    works = proxy_works(jupyter, port)
    if works is None:
        works = _proxy_installed()
    if works or proxy:
        return f"{jupyter.base_url}proxy/{port}{_slash(parts.path)}"
    if any(environ.get(name) for name in _REMOTE_SIGNS) and port not in _warned:
        _warned.add(port)
        warnings.warn(
            f"the viewer frame points at 127.0.0.1:{port} of {socket.gethostname()}, which a "
            "browser on another computer cannot reach: install jupyter-server-proxy where "
            "the Jupyter server runs (and restart it), or run `fireflyhpc tunnel "
            f"{socket.gethostname()} {port} --port {port}` on your computer and run the "
            "cell again", stacklevel=3)
    return server_url
