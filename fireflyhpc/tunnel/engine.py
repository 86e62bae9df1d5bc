"""The tunnel engine: a local listener, a self-healing path, one pump per connection.

The engine knows nothing about SSH. It is given a *connector*, a callable that
builds a :class:`Path` (an authenticated route to the target that can forward
one local connection at a time, be probed, and be closed). Backends provide
paths: :mod:`fireflyhpc.tunnel.paramiko_path` (pure Python, portable) and
:mod:`fireflyhpc.tunnel.openssh` (drives the system ``ssh``).

Promises:
- the listener stays bound from :meth:`Tunnel.start` to :meth:`Tunnel.close`,
  whatever happens to the path;
- a dead path is noticed within ``keepalive + probe_timeout`` seconds and
  rebuilt with exponential backoff (a keepalive that failed across a pause of this
  process, a sleeping laptop, is asked again before it counts);
- a new connection waits up to ``wait_for_path`` seconds for a usable path,
  then gets a clear refusal (an HTTP 502 page if it speaks HTTP);
- every per-connection thread ends when its connection does.
"""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
from collections.abc import Callable
from typing import Protocol

from fireflyhpc.clock import pause_detector
from fireflyhpc.errors import FireflyHPCError, TunnelError
from fireflyhpc.tunnel.listener import Listener
from fireflyhpc.tunnel.reply import refuse

log = logging.getLogger(__name__)


class TargetRefused(Exception):
    """The path works but the target (NODE:PORT) refused or is unreachable.

    Raised by :meth:`Path.forward` before any client byte was consumed.
    """


class PathBroken(Exception):
    """The path could not open a channel for a reason other than the target."""


class Path(Protocol):
    """One authenticated route to the target."""

    description: str

    def forward(self, sock: socket.socket) -> None:
        """Carry ``sock`` to the target until the connection ends; close ``sock``.

        Raises :class:`TargetRefused` or :class:`PathBroken` (leaving ``sock``
        open and unread) if no channel could be opened.
        """

    def probe(self, timeout: float) -> None:
        """Return if the whole path answered within ``timeout``; raise otherwise."""

    def check_target(self) -> None:
        """Open and close one channel to the target; raise TargetRefused or PathBroken."""

    def close(self) -> None:
        """Tear the path down (idempotent)."""


Connector = Callable[[], Path]


class Tunnel:
    """Serve ``listener`` through paths made by ``connect``; see the module doc."""

    def __init__(self, listener: Listener, connect: Connector, *, target: str,
                 keepalive: float = 5.0, probe_timeout: float = 8.0,
                 wait_for_path: float = 45.0, max_backoff: float = 8.0,
                 stopping: threading.Event | None = None) -> None:
        self.listener = listener
        self.url = listener.url
        self.target = target
        self._connect = connect
        self._keepalive = keepalive
        self._probe_timeout = probe_timeout
        self._wait_for_path = wait_for_path
        self._max_backoff = max_backoff
        self._path: Path | None = None
        self._cond = threading.Condition()
        # Set by close(); a connector given the same event can abandon a connect.
        self._stopping = stopping or threading.Event()
        self._wake = threading.Event()
        self._clients: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._probes_ok = 0  # successful probes so far (a path proven alive again)
        self.reconnects = 0

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        """Build the first path and check the target answers, then start serving.

        Raises what the connector raises, or TunnelError if nothing answers at
        the target; nothing is left running then.
        """
        path = self._connect()
        try:
            path.check_target()
        except (TargetRefused, PathBroken) as exc:
            path.close()
            raise TunnelError(f"nothing answers at {self.target} ({exc})",
                              hint="is the server running on the node, on that port?") from exc
        except BaseException:
            path.close()
            raise
        with self._cond:
            self._path = path
        for target, name in ((self._accept_loop, "accept"), (self._supervise, "keepalive")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("forwarding %s -> %s via %s", self.url, self.target, path.description)

    @property
    def via(self) -> str | None:
        """What carries the tunnel now (the path's description), None while reconnecting."""
        with self._cond:
            return self._path.description if self._path is not None else None

    def close(self) -> None:
        """Stop accepting, end every connection, close the path, free the port."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._wake.set()
        self.listener.close()
        with self._cond:
            clients = list(self._clients)
            path, self._path = self._path, None
            self._cond.notify_all()
        for client in clients:
            _shutdown(client)
        if path is not None:
            path.close()
        for thread in self._threads:
            thread.join(timeout=15)  # a connect in progress sees the event and gives up

    def __enter__(self) -> Tunnel:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- connections ----------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            client = self.listener.accept(timeout=0.5)
            if client is None:
                continue
            with self._cond:
                self._clients.add(client)
            threading.Thread(target=self._handle, args=(client,), name="conn",
                             daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        try:
            self._serve_one(client)
        finally:
            with self._cond:
                self._clients.discard(client)
            try:
                client.close()
            except OSError:
                pass

    def _serve_one(self, client: socket.socket) -> None:
        deadline = time.monotonic() + self._wait_for_path
        broken: Path | None = None
        checked = -1
        for _attempt in range(4):
            path = self._wait_path(deadline - time.monotonic(), broken, checked)
            if path is None:
                reason = ("the tunnel is closing" if self._stopping.is_set() else
                          f"the path to {self.target} is down and still reconnecting")
                log.warning("connection refused locally: %s", reason)
                refuse(client, reason)
                return
            try:
                path.forward(client)
                return
            except TargetRefused as exc:
                log.warning("request to %s failed: %s", self.target, exc)
                refuse(client, f"nothing answers at {self.target}: {exc}")
                return
            except PathBroken as exc:
                log.info("could not open a channel (%s); checking the path", exc)
                with self._cond:
                    broken, checked = path, self._probes_ok
                self._wake.set()  # the supervisor probes now and drops the path if dead
        refuse(client, f"could not open a channel to {self.target}")

    def _wait_path(self, timeout: float, broken: Path | None, checked: int) -> Path | None:
        """A usable path: not ``broken``, unless a probe passed after ``checked``."""
        def usable() -> bool:
            if self._stopping.is_set() or self._path is None:
                return self._stopping.is_set()
            return self._path is not broken or self._probes_ok > checked

        with self._cond:
            self._cond.wait_for(usable, timeout=max(timeout, 0))
            return None if self._stopping.is_set() or not usable() else self._path

    # -- keepalive and reconnect ------------------------------------------------

    def _drop(self, path: Path, why: str) -> None:
        with self._cond:
            if self._path is path:
                self._path = None
        log.warning("path to %s lost (%s); reconnecting", self.target, why)
        path.close()

    def _supervise(self) -> None:
        backoff = 0.5
        while not self._stopping.is_set():
            with self._cond:
                path = self._path
            if path is None:
                if self._reconnect():
                    backoff = 0.5
                    continue
                self._stopping.wait(backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, self._max_backoff)
                continue
            self._wake.wait(self._keepalive)
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                self._probe(path)
            except Exception as exc:  # any failure means the path is unusable
                self._drop(path, f"no answer to keepalive: {exc}")
            else:
                with self._cond:
                    self._probes_ok += 1
                    self._cond.notify_all()

    def _probe(self, path: Path) -> None:
        """Probe ``path``; a probe that failed across a pause of this process (a
        sleeping laptop) proves nothing, so it is asked once more before it counts."""
        pauses = pause_detector()
        mark = pauses.mark()
        try:
            path.probe(self._probe_timeout)
        except Exception as exc:
            if not pauses.paused_since(mark):
                raise
            log.info("keepalive failed across a pause (%s); asking again", exc)
            path.probe(self._probe_timeout)

    def _reconnect(self) -> bool:
        try:
            path = self._connect()
        except (FireflyHPCError, OSError, EOFError) as exc:
            log.warning("reconnect to %s failed: %s", self.target, exc)
            return False
        except Exception as exc:  # paramiko raises assorted types; keep the loop alive
            log.warning("reconnect to %s failed: %s: %s", self.target, type(exc).__name__, exc)
            return False
        with self._cond:
            if self._stopping.is_set():
                path.close()
                return False
            self._path = path
            self._cond.notify_all()
        self.reconnects += 1
        log.warning("path to %s is back (reconnect %d)", self.target, self.reconnects)
        return True


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


__all__ = ["Connector", "Path", "PathBroken", "TargetRefused", "Tunnel", "TunnelError"]
