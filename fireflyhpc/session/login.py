"""The session's login connection, opened in a thread of its own.

Logging in is the session's first wait (an SSH handshake, a one-time code, or only a
look for the user's own master), and the rest of the session's code has yet to load
then: :class:`LoginOpening` lets the two overlap. Whoever takes the connection
(:meth:`LoginOpening.result`) owns it; one that nobody takes is closed
(:meth:`LoginOpening.close`), also if it arrives after everyone stopped waiting.

Only the OpenSSH backend logs in on a thread of its own: ssh asks its own questions,
and a stop cancels it. The Python fallback asks through ``getpass``, which turns the
terminal's echo off while it waits; abandoned on another thread, it could leave it
off. It logs in when :meth:`LoginOpening.result` is called, in the caller's thread.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from fireflyhpc.config import ResolvedSettings
from fireflyhpc.session.request import ConnectRequest
from fireflyhpc.ssh.factory import choose_backend, open_connection

log = logging.getLogger(__name__)

POLL = 0.05  # seconds between looks at the stop event while waiting


class LoginOpening:
    """``open_connection`` to the session's login node, running from construction on
    (OpenSSH; see the module doc).

    Setting ``stop`` abandons it: an OpenSSH login in progress is cancelled, and
    :meth:`result` raises KeyboardInterrupt.
    """

    def __init__(self, request: ConnectRequest, settings: ResolvedSettings,
                 stop: threading.Event) -> None:
        self._request = request
        self._settings = settings
        self._stop = stop
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._conn: Any = None
        self._error: BaseException | None = None
        self._abandoned = False
        self._thread: threading.Thread | None = None
        # Decided once here: the thread (or result()) opens with this very backend.
        self._backend = choose_backend(settings.ssh, prompter=request.prompter)
        if self._backend == "openssh":
            self._thread = threading.Thread(target=self._open, daemon=True,
                                            name="fireflyhpc-login")
            self._thread.start()

    def _open(self) -> None:
        try:
            conn = open_connection(
                self._settings.require_login(), ssh_config=self._request.ssh_config,
                accept_new_host_key=self._request.accept_new_host_key,
                prompter=self._request.prompter, backend=self._backend, cancel=self._stop)
        except BaseException as exc:  # handed to result()'s caller, in its thread
            self._error = exc
        else:
            with self._lock:
                if self._abandoned:
                    conn.close()
                else:
                    self._conn = conn
        finally:
            self._done.set()

    def result(self) -> Any:
        """The connection, once open (the caller owns it from here). Raises what opening
        raised (ConfigError, SSHError), or KeyboardInterrupt once ``stop`` is set."""
        if self._thread is None and not self._done.is_set():
            self._open()
        while not self._done.wait(POLL) and not self._stop.is_set():
            pass
        if self._stop.is_set():
            self.close()
            raise KeyboardInterrupt
        if self._error is not None:
            raise self._error
        with self._lock:
            conn, self._conn = self._conn, None
            self._abandoned = True  # taken: close() has nothing left to do
        return conn

    def close(self) -> None:
        """Close the connection unless it was taken; one still opening is closed by the
        thread as soon as it is open. Never raises."""
        with self._lock:
            conn, self._conn = self._conn, None
            self._abandoned = True
        if conn is not None:
            try:
                conn.close()
            except Exception as exc:  # closing is best effort
                log.debug("closing the untaken login connection: %s", exc)


__all__ = ["LoginOpening"]
