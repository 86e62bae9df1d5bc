"""Time that survives sleep: telling a paused process from a dead peer.

A laptop's lid closes, or the process is stopped (SIGSTOP, a debugger, a swapped-out
machine): every timer that was running sees its deadline pass at once when the
process runs again, and a request that was waiting for a reply "timed out" although
the other side never had a chance to answer. Such a verdict proves nothing.

:class:`PauseDetector` tells these pauses apart. A daemon thread ticks every second
and compares the time that passed on two clocks that keep counting while this
process cannot run, :func:`boottime` (which counts a suspended machine too) and
the wall clock; a tick much longer than asked for is a pause. Code that judges a
timeout takes a :meth:`~PauseDetector.mark` before it starts waiting and asks
:meth:`~PauseDetector.paused_since` when the wait failed: if a pause fell into the
wait, the failure is to be tried again, not believed.

The detector also notices a pause that its own thread has not yet seen: right after
a resume, whichever thread runs first may ask, so a tick that is overdue counts as a
pause too.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)

TICK = 1.0  # seconds between ticks
THRESHOLD = 4.0  # a tick this much longer than asked for is a pause


def boottime() -> float:
    """Seconds on a clock that never goes back and keeps counting while the machine
    sleeps: CLOCK_BOOTTIME on Linux, CLOCK_MONOTONIC on macOS (where it counts sleep
    and Python's ``time.monotonic`` does not); ``time.monotonic`` elsewhere."""
    if sys.platform.startswith("linux") and hasattr(time, "CLOCK_BOOTTIME"):
        return time.clock_gettime(time.CLOCK_BOOTTIME)
    if sys.platform == "darwin" and hasattr(time, "CLOCK_MONOTONIC"):
        return time.clock_gettime(time.CLOCK_MONOTONIC)
    return time.monotonic()


@dataclass(frozen=True)
class Mark:
    """A point in time as the detector saw it (see :meth:`PauseDetector.mark`)."""

    pauses: int
    at: float  # boottime()


class PauseDetector:
    """Counts the pauses of this process (see the module doc); thread-safe."""

    def __init__(self, tick: float = TICK, threshold: float = THRESHOLD) -> None:
        self.tick = tick
        self.threshold = threshold
        self._lock = threading.Lock()
        self._count = 0
        self._last_length = 0.0
        self._last_end = 0.0  # boottime when the last pause ended
        self._last_tick = (boottime(), time.time())
        self._thread: threading.Thread | None = None

    def start(self) -> PauseDetector:
        """Start the ticking thread (a daemon; idempotent); return self."""
        with self._lock:
            if self._thread is None:
                self._last_tick = (boottime(), time.time())
                self._thread = threading.Thread(target=self._run, name="pause-detector",
                                                daemon=True)
                self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            time.sleep(self.tick)
            self.observe(boottime(), time.time())

    def observe(self, boot: float, wall: float) -> float:
        """Record a tick seen at ``boot`` (boottime) and ``wall`` (time.time); return the
        length of the pause it reveals (0.0 if none). Called by the ticking thread."""
        with self._lock:
            last_boot, last_wall = self._last_tick
            self._last_tick = (boot, wall)
            gap = max(boot - last_boot, wall - last_wall) - self.tick
            if gap <= self.threshold:
                return 0.0
            self._count += 1
            self._last_length = gap
            self._last_end = boot
        log.info("this process did not run for %.0f s (paused or asleep)", gap)
        return gap

    def _overdue(self, boot: float, wall: float) -> float:
        last_boot, last_wall = self._last_tick
        gap = max(boot - last_boot, wall - last_wall) - self.tick
        return gap if self._thread is not None and gap > self.threshold else 0.0

    def mark(self) -> Mark:
        """Now, for a later :meth:`paused_since`."""
        with self._lock:
            return Mark(self._count, boottime())

    def paused_since(self, mark: Mark) -> bool:
        """True if this process was paused after ``mark`` (or is just back from one)."""
        with self._lock:
            return self._count > mark.pauses or self._overdue(boottime(), time.time()) > 0

    @property
    def last_pause(self) -> float:
        """The length in seconds of the last pause seen (0.0: none yet)."""
        with self._lock:
            return max(self._last_length, self._overdue(boottime(), time.time()))

    def paused_for(self, within: float) -> float:
        """The length of a pause that ended less than ``within`` seconds ago (or is
        ending now); 0.0 if none did."""
        with self._lock:
            now = boottime()
            overdue = self._overdue(now, time.time())
            recent = self._last_length if self._count and now - self._last_end <= within \
                else 0.0
            return max(recent, overdue)


_shared: PauseDetector | None = None
_shared_lock = threading.Lock()


def pause_detector() -> PauseDetector:
    """The process-wide detector, started on first use."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = PauseDetector()
        return _shared.start()
