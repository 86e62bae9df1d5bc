"""`fireflyhpc serve` as a library call: check the request, build the app, run it."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from fireflyhpc.errors import ConfigError, ServerError

log = logging.getLogger(__name__)


@dataclass
class ServeRequest:
    """Everything `fireflyhpc serve` was asked to do."""

    data_dirs: Sequence[str] = field(default_factory=list)
    host: str = "127.0.0.1"
    ports: tuple[int, int] = (0, 0)  # (LOW, HIGH): a free port in that range; (0, 0): any
    demo: bool = False
    app: str = "auto"
    token_file: str | None = None
    no_token: bool = False
    ready_file: str | None = None
    open_browser: bool = True


def demo_dir() -> str:
    """The demo dataset's directory, generated and cached on first use.

    Raises ServerError if the demo module is not available or fails.
    """
    try:
        from fireflyhpc.demo import ensure_demo
    except ImportError as exc:
        raise ServerError(f"the demo dataset is not available in this installation ({exc})") \
            from None
    try:
        return os.fspath(ensure_demo())
    except OSError as exc:
        raise ServerError(f"cannot create the demo dataset: {exc}") from None


def serve(request: ServeRequest) -> None:
    """Serve until interrupted. Raises ConfigError for bad input and ServerError
    if the server cannot start; returns normally on SIGINT/SIGTERM."""
    from fireflyhpc.server import auth, runner
    from fireflyhpc.server.app import create_app
    from fireflyhpc.datasets import discover
    from fireflyhpc.server.viewers import choose_app

    dirs = list(request.data_dirs)
    if request.no_token and request.token_file:
        raise ConfigError("--no-token and --token-file contradict each other")
    token = None if request.no_token else auth.resolve_token(request.token_file)
    webapp = choose_app(request.app)
    if request.demo:
        dirs.append(demo_dir())
    datasets = discover(dirs)
    if not datasets:
        log.warning("no data to serve: name a DATA_DIR, or use --demo")
    address = runner.resolve(request.host, request.ports[0])
    if not runner.is_loopback(address[4][0]):
        if token is None:
            raise ConfigError(f"refusing --no-token on non-loopback address {address[4][0]}: "
                              "anyone who can reach it could read the data")
        log.warning("listening on %s, which other machines may reach; "
                    "the token is all that protects the data", address[4][0])
    listener = runner.listen(request.host, request.ports)
    try:
        if token is None:
            log.warning("--no-token: any local user can read the served data")
        log.info("app: %s (%s); data: %s", webapp.kind, webapp.root,
                 ", ".join(f"{d.name}={d.root}" for d in datasets) or "none")
        app = create_app(webapp, datasets, token)
        options = runner.RunOptions(token=token, open_browser=request.open_browser,
                                    ready_file=Path(request.ready_file) if request.ready_file
                                    else None)
        runner.run(app, listener, options)
    finally:
        listener.sock.close()
