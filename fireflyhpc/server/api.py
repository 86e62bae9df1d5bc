"""Start and stop payload servers from Python (scripts, Jupyter).

:func:`spawn_server` runs ``python -m fireflyhpc serve ... --no-browser
--ready-file F`` as a child process in its own session (it outlives a notebook
cell's interrupt), passes the token through the environment (never argv), and
waits for the ready file. :func:`quit_all_servers` stops this user's servers
found through the registry (:mod:`fireflyhpc.server.registry`), each verified by
hostname, pid and process create time: nothing is found by process name.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import psutil

from fireflyhpc.errors import ConfigError, ServerError
from fireflyhpc.procutil import running_process
from fireflyhpc.urls import token_url

log = logging.getLogger(__name__)

_TOKEN_ENV = "FIREFLYHPC_TOKEN"  # same as fireflyhpc.server.auth.TOKEN_ENV (no flask here)


@dataclass
class ServerHandle:
    """A running server: ``url`` includes the token; ``base_url`` does not."""

    url: str
    base_url: str
    port: int
    pid: int
    token: str | None
    process: subprocess.Popen[bytes] | None = None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout`` s). Idempotent."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout)
            return
        quit_all_servers(self.pid, timeout=timeout)

    def __enter__(self) -> "ServerHandle":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def iframe(self, width: int | str = 700, height: int | str = 700) -> Any:
        """The viewer, to display in a notebook cell (see :func:`fireflyhpc.notebook.show`)."""
        from fireflyhpc.notebook import show

        return show(self, width=width, height=height)

    def _repr_html_(self) -> str:  # Jupyter shows the viewer itself
        return str(self.iframe()._repr_html_())


def _directories(directory: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None
                 ) -> list[str]:
    if directory is None:
        return []
    if isinstance(directory, (str, os.PathLike)):
        return [os.fspath(directory)]
    return [os.fspath(d) for d in directory]


def _tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return " | ".join(line for line in text.strip().splitlines()[-lines:] if line.strip())


def _wait_ready(process: subprocess.Popen[bytes], ready: Path, stderr: Path,
                timeout: float) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    delay = 0.02
    while time.monotonic() < deadline:
        if ready.exists():
            try:
                return dict(json.loads(ready.read_text(encoding="utf-8")))
            except ValueError:
                pass  # cannot happen with the atomic write; retry to be safe
        if process.poll() is not None:
            raise ServerError(f"the server exited with status {process.returncode} before "
                              f"it was ready: {_tail(stderr) or 'no output'}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)
    process.kill()
    process.wait()
    raise ServerError(f"the server was not ready after {timeout:g} s: "
                      f"{_tail(stderr) or 'no output'}")


def spawn_server(directory: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None
                 = None, port: int = 0, host: str = "127.0.0.1", token: str | None = None,
                 app: str = "auto", demo: bool = False, *, timeout: float = 60.0,
                 python: str | None = None) -> ServerHandle:
    """Start ``fireflyhpc serve`` in the background; return once it listens.

    ``directory`` is one DATA_DIR or a list of them; ``token`` None means a new
    random one. ``timeout`` bounds the wait (the first ``demo=True`` run
    generates the demo data). Raises ServerError, with the tail of the child's
    stderr, if the server exits or is not ready in time.
    """
    from fireflyhpc.server.auth import generate_token, validate_token

    token = generate_token() if token is None else validate_token(token, "token=")
    argv = [python or sys.executable, "-m", "fireflyhpc", "serve", *_directories(directory),
            "--port", str(int(port)), "--host", host, "--app", app, "--no-browser"]
    if demo:
        argv.append("--demo")
    workdir = Path(tempfile.mkdtemp(prefix="fireflyhpc-spawn-"))
    ready, stderr = workdir / "ready.json", workdir / "stderr.txt"
    argv += ["--ready-file", str(ready)]
    env = dict(os.environ, **{_TOKEN_ENV: token})
    try:
        with open(stderr, "wb") as err:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                       stderr=err, env=env, start_new_session=True)
        info = _wait_ready(process, ready, stderr, timeout)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    base = str(info["url"])
    url = token_url(base, token)
    log.info("server %s listening on %s", process.pid, base)
    return ServerHandle(url, base, int(str(info["port"])), process.pid, token, process)


def running_servers() -> list[ServerHandle]:
    """Handles for this user's live servers on this host (stale entries removed)."""
    from fireflyhpc.server.registry import list_servers

    return [ServerHandle(entry.token_url, entry.url, entry.port, entry.pid, entry.token)
            for _path, entry in list_servers()]


def quit_all_servers(pid: int | None = None, timeout: float = 10.0) -> list[int]:
    """Stop this user's servers on this host (only ``pid``, if given).

    Every candidate comes from the registry and is verified (hostname, pid,
    create time) right before it is signalled. Returns the pids stopped.
    """
    from fireflyhpc.server.registry import is_alive, list_servers, unregister

    targets = [(path, entry) for path, entry in list_servers()
               if pid is None or entry.pid == pid]
    if pid is not None and not targets:
        log.warning("no fireflyhpc server with pid %s is running", pid)
    processes = []
    for path, entry in targets:
        # The Process remembers the identity it was checked with: psutil refuses to
        # signal a different process that later got the same pid.
        proc = running_process(entry.pid, entry.create_time) if is_alive(entry) else None
        if proc is not None:
            try:
                proc.terminate()
                processes.append(proc)
            except psutil.NoSuchProcess:
                pass
            except psutil.AccessDenied:
                log.warning("not allowed to stop the server with pid %s", entry.pid)
        unregister(path)
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    for proc in alive:
        proc.kill()
    psutil.wait_procs(alive, timeout=timeout)
    _reap(processes)
    return [proc.pid for proc in processes]


def _reap(processes: Iterable[psutil.Process]) -> None:
    """Collect exit statuses of our own children among ``processes`` (no zombies)."""
    for proc in processes:
        try:
            os.waitpid(proc.pid, os.WNOHANG)
        except ChildProcessError:
            pass


# Firefly 3.6.0's spawnFireflyServer arguments that change nothing here, and why.
_NOT_APPLICABLE = {
    "frames_per_second": "only paces Firefly's Flask /stream, which fireflyhpc does not serve",
    "decimation_factor": "only thins data sent to Firefly's Flask /data_input, which "
                         "fireflyhpc does not serve",
    "multiple_rooms": "rooms separate Firefly's Flask socket sessions; every browser here "
                      "has its own view anyway",
    "method='flask'": "fireflyhpc serves Firefly's app and data from its own token-protected "
                      "server (like method='http'); Firefly's Flask-only features (Load New "
                      "Data, sendDataViaFlask, settings exchange, /stream) are not available",
    "public": "fireflyhpc never accepts data from the browser (what Firefly's public mode "
              "turns off); the server still binds 127.0.0.1 and needs its token (for other "
              "machines use host=..., or fireflyhpc tunnel / connect)",
}
_said: set[str] = set()


def firefly_arguments(method: str | None, directory: str | os.PathLike[str] | None,
                      frames_per_second: int | None, decimation_factor: int | None,
                      multiple_rooms: bool | None, public: bool | None
                      ) -> tuple[dict[str, Any], list[str]]:
    """Map Firefly's spawnFireflyServer arguments to :func:`spawn_server` keywords.

    Returns the keywords and the names of the arguments given that do not apply
    (keys of ``_NOT_APPLICABLE``). Pure; raises ConfigError for a ``method``
    Firefly does not know either.
    """
    if method not in (None, "flask", "http"):
        raise ConfigError(f"spawnFireflyServer: method={method!r}: Firefly knows 'flask' and "
                          "'http'")
    given = {"frames_per_second": frames_per_second is not None,
             "decimation_factor": decimation_factor is not None,
             "multiple_rooms": bool(multiple_rooms), "method='flask'": method == "flask",
             "public": bool(public)}
    keywords: dict[str, Any] = {}
    if directory is not None and os.path.isfile(os.path.join(directory, "index.html")):
        keywords["app"] = os.fspath(directory)  # Firefly's meaning: a copy of its web app
    elif directory is not None:
        keywords["directory"] = os.fspath(directory)
    return keywords, [name for name, yes in given.items() if yes]


def _say_once(names: Sequence[str]) -> None:
    new = [name for name in names if name not in _said]
    if new:
        _said.update(new)
        warnings.warn("spawnFireflyServer: " + "; ".join(
            f"{name}: {_NOT_APPLICABLE[name]}" for name in new), stacklevel=3)


def spawnFireflyServer(port: int = 0, method: str | None = None,  # noqa: N802
                       directory: str | os.PathLike[str] | None = None,
                       frames_per_second: int | None = None, decimation_factor: int | None = None,
                       max_time: float = 60.0, multiple_rooms: bool | None = None,
                       public: bool | None = None, **kwargs: Any) -> ServerHandle:
    """Firefly-compatible spelling of :func:`spawn_server`.

    Takes Firefly 3.6.0's arguments in Firefly's order (port, method, directory,
    frames_per_second, decimation_factor, max_time, multiple_rooms, public);
    other keywords go to :func:`spawn_server` (``app``, ``demo``, ``host``...).
    In Firefly ``directory`` is a copy of Firefly's web app: a directory with an
    ``index.html`` is served as the app (``--app PATH``), any other directory as
    data. ``max_time`` bounds the wait. The arguments that change nothing here
    (``method='flask'``, ``frames_per_second``, ``decimation_factor``,
    ``multiple_rooms``, ``public``) are named in one warning, once per process
    each. ``public=True`` never binds another address nor drops the token.
    Unlike Firefly, port 0 (the default) picks a free port, and a
    :class:`ServerHandle` (with ``.process``; displayed in a notebook, the
    viewer) is returned instead of the Popen object.
    """
    keywords, not_applicable = firefly_arguments(method, directory, frames_per_second,
                                                 decimation_factor, multiple_rooms, public)
    _say_once(not_applicable)
    for key, value in keywords.items():
        kwargs.setdefault(key, value)
    return spawn_server(port=port, timeout=max_time, **kwargs)


def quitAllFireflyServers(pid: int | Any = None) -> list[int]:  # noqa: N802
    """Firefly-compatible spelling of :func:`quit_all_servers`: ``pid`` may also be
    what spawnFireflyServer returned (anything with a ``.pid``)."""
    return quit_all_servers(getattr(pid, "pid", pid))
