"""Is a recorded process still running? One answer for session records and server entries.

A record names a process by pid *and* its start stamp (:func:`start_stamp`): a pid
alone may have been reused by an unrelated process since. The stamp must not move
when the wall clock does (NTP, a laptop's clock set after a sleep): psutil's create
time on Linux is the boot time *as the wall clock tells it now* plus the start
offset, and the boot time it reads moves with every clock step, if only by its
rounding to whole seconds; a live session would then look like a reused pid. So on
Linux the stamp is the start offset itself: seconds from boot, from /proc/PID/stat.
The verdict, everywhere:

* no process with that pid, or a zombie (it has exited; only its parent's wait is
  missing): **dead**;
* a process with that pid but another create time (the pid was reused): **dead**;
* a process with that pid that we may not inspect (psutil's AccessDenied, e.g. under
  ``hidepid``): **alive**. It exists, and calling it dead would let a caller delete
  the record of a session or server that still runs.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: a session records itself before it needs psutil
    import psutil

# Start stamps come from clock ticks; two readings of one process agree to well within
# this, and a reused pid differs by far more.
CREATE_TIME_TOLERANCE = 0.01


def start_stamp(proc: psutil.Process) -> float:
    """When ``proc`` started, as the stamp records keep (see the module doc): on Linux
    seconds from boot (no clock change moves it), elsewhere psutil's create time.

    Raises psutil.NoSuchProcess, or psutil.AccessDenied when it may not be read.
    """
    if not sys.platform.startswith("linux"):
        return float(proc.create_time())
    return _boot_offset(proc.pid)


def own_start_stamp() -> float:
    """This process's :func:`start_stamp`."""
    if not sys.platform.startswith("linux"):
        import psutil

        return start_stamp(psutil.Process())
    return _boot_offset(os.getpid())


def _boot_offset(pid: int) -> float:
    """Seconds from boot to the start of ``pid`` (Linux, /proc)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError as exc:
        import psutil

        if isinstance(exc, PermissionError):
            raise psutil.AccessDenied(pid) from None
        raise psutil.NoSuchProcess(pid) from None
    # Fields after the command name (which may hold spaces and parentheses): the
    # 20th of them is field 22 of proc(5), starttime, in clock ticks since boot.
    fields = data[data.rindex(b")") + 2:].split()
    return int(fields[19]) / os.sysconf("SC_CLK_TCK")


def running_process(pid: int, create_time: float) -> psutil.Process | None:
    """The process ``pid`` if it is the one whose :func:`start_stamp` is
    ``create_time`` and has not exited (see the module's verdict), else None.

    The returned :class:`psutil.Process` remembers that identity: psutil refuses to
    signal a different process that later gets the same pid.
    """
    import psutil

    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None
    try:
        if abs(start_stamp(proc) - create_time) >= CREATE_TIME_TOLERANCE:
            return None
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:
        return proc  # it exists; we are not allowed to look closer
    return proc


def process_alive(pid: int, create_time: float) -> bool:
    """True if process ``pid`` with start stamp ``create_time`` still runs (module verdict)."""
    return running_process(pid, create_time) is not None
