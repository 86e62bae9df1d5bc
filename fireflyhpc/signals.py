"""Ctrl-C, SIGTERM and SIGHUP as a request to stop, for every long-running command.

`serve`, `connect` and `tunnel` all run until one of these signals comes and then
clean up. :class:`StopSignals` is the one place that sets this up.

The handler itself does almost nothing: it writes the signal's number into a pipe.
It takes no lock and raises no exception, so it is safe wherever the main thread
happens to be when the signal lands: inside a lock (``threading.Event.set`` from a
handler can deadlock on the event's own lock), or inside a library that catches
every exception (waitress's event loop swallows anything raised in a channel's
handler and carries on serving). A helper thread reads the pipe, sets the event
and runs the callbacks, where locks and I/O are fine.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType, TracebackType
from typing import Any, Callable

# SIGHUP too: the SSH session that started a payload on a compute node may hang up,
# and a terminal that closes sends it to `connect` and `tunnel`.
STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

log = logging.getLogger(__name__)

SIGNAL_NAMES: dict[int, str] = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM",
                                signal.SIGHUP: "SIGHUP"}


def signal_name(signum: int) -> str:
    """How to call ``signum`` in a message ("Ctrl-C" for SIGINT)."""
    return SIGNAL_NAMES.get(signum, f"signal {signum}")


class StopSignals:
    """While entered (in the main thread), SIGINT, SIGTERM and SIGHUP ask to stop.

    On the first of them ``event`` is set and each callback given to
    :meth:`on_stop` runs once, on a helper thread, with the signal's number; later
    signals change nothing. ``interrupt`` (settable at any time) makes the handler
    also raise KeyboardInterrupt in the main thread, for work that can only be
    unwound, such as a connection still being set up. Leaving the block restores
    the previous handlers; a signal that came in before that is still delivered.
    """

    def __init__(self, event: threading.Event | None = None, *, interrupt: bool = False,
                 signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> None:
        self.event = event if event is not None else threading.Event()
        self.interrupt = interrupt
        self.signum: int | None = None
        self._signals = signals
        self._callbacks: list[Callable[[int], None]] = []
        self._lock = threading.Lock()  # never taken by the handler
        self._previous: dict[int, Any] = {}
        self._pipe: tuple[int, int] | None = None
        self._thread: threading.Thread | None = None

    def is_set(self) -> bool:
        """True once a stop signal came."""
        return self.event.is_set()

    def on_stop(self, callback: Callable[[int], None]) -> None:
        """Run ``callback(signum)`` on the first stop signal (at once if it already came)."""
        with self._lock:
            if self.signum is None:
                self._callbacks.append(callback)
                return
            signum = self.signum
        callback(signum)

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self._pipe is not None:
            try:
                os.write(self._pipe[1], bytes([signum]))
            except OSError:  # pipe full (a signal storm) or already closed: already noted
                pass
        if self.interrupt:
            raise KeyboardInterrupt

    def _watch(self, read_end: int) -> None:
        while True:
            try:
                data = os.read(read_end, 64)
            except InterruptedError:  # pragma: no cover (retried by Python itself)
                continue
            if not data:
                return
            self._stop(data[0])

    def _stop(self, signum: int) -> None:
        with self._lock:
            if self.signum is not None:
                return
            self.signum = signum
            callbacks, self._callbacks = self._callbacks, []
        self.event.set()
        for callback in callbacks:
            try:
                callback(signum)
            except Exception:  # a bug in the callback: the others must still run
                log.exception("stop callback %r failed", callback)

    def __enter__(self) -> StopSignals:
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)
        self._pipe = (read_end, write_end)
        self._thread = threading.Thread(target=self._watch, args=(read_end,),
                                        name="fireflyhpc-signals", daemon=True)
        self._thread.start()
        try:
            for sig in self._signals:
                self._previous[sig] = signal.signal(sig, self._handler)
        except BaseException:
            self._restore()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._restore()

    def _restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()
        pipe, self._pipe = self._pipe, None
        if pipe is None:
            return
        os.close(pipe[1])  # the helper thread reads what is left, then sees the end
        if self._thread is not None:
            self._thread.join()
        os.close(pipe[0])
