"""Is a recorded process still running? One answer for session records and server entries.

A record names a process by pid *and* psutil's create time: a pid alone may have
been reused by an unrelated process since. The verdict, everywhere:

* no process with that pid, or a zombie (it has exited; only its parent's wait is
  missing): **dead**;
* a process with that pid but another create time (the pid was reused): **dead**;
* a process with that pid that we may not inspect (psutil's AccessDenied, e.g. under
  ``hidepid``): **alive**. It exists, and calling it dead would let a caller delete
  the record of a session or server that still runs.
"""

from __future__ import annotations

import psutil

# psutil's create times come from clock ticks; two readings of one process agree to
# well within this, and a reused pid differs by far more.
CREATE_TIME_TOLERANCE = 0.01


def running_process(pid: int, create_time: float) -> psutil.Process | None:
    """The process ``pid`` if it is the one that started at ``create_time`` and has not
    exited (see the module's verdict), else None.

    The returned :class:`psutil.Process` remembers that identity: psutil refuses to
    signal a different process that later gets the same pid.
    """
    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None
    try:
        if abs(proc.create_time() - create_time) >= CREATE_TIME_TOLERANCE:
            return None
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:
        return proc  # it exists; we are not allowed to look closer
    return proc


def process_alive(pid: int, create_time: float) -> bool:
    """True if process ``pid``, started at ``create_time``, still runs (module verdict)."""
    return running_process(pid, create_time) is not None
