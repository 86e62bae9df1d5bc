"""Is a connect session usable, and is it still alive?

:func:`wait_http_ok` confirms readiness the only way that counts: an HTTP request
through the local end of the tunnel, carrying the token, answered 200.
:func:`watch_loop` then runs a session's check (the job in a batched squeue, the
payload's process group, the lifeline) with backoff until the user stops, the job
ends or the server dies; losing the cluster meanwhile is not an end, but a reason
to reconnect. :func:`job_ending` and :func:`server_ending` word those ends.
"""

from __future__ import annotations

import logging
import time
import threading
from typing import Callable
from urllib.parse import urlsplit

from fireflyhpc.clock import PauseDetector, boottime
from fireflyhpc.errors import FireflyHPCError, SchedulerError, ServerError, SSHError
from fireflyhpc.scheduler import Backoff, JobInfo
from fireflyhpc.session import jobs
from fireflyhpc.session.request import Ending

log = logging.getLogger(__name__)

READY_TIMEOUT = 30.0
HTTP_RETRY = 0.05  # seconds between tries of the first page (each is a new tunnel channel)


def unreachable(exc: BaseException) -> bool:
    """True for what a check raises when the cluster could not be reached, or did not
    answer in time (SSHError, RemoteTimeoutError)."""
    from fireflyhpc.ssh.remote import RemoteTimeoutError  # paramiko: only once needed

    return isinstance(exc, (SSHError, RemoteTimeoutError))


def http_status(base_url: str, token: str | None, *, timeout: float = 10.0) -> int:
    """The status of ``GET /`` at ``base_url`` (with ``Authorization: Bearer token``).

    Raises OSError / http.client.HTTPException when no answer comes.
    """
    import http.client  # not before the first page: the session's opening preloads it

    parts = urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80,
                                      timeout=timeout)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        conn.request("GET", parts.path or "/", headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def wait_http_ok(base_url: str, token: str | None, *, timeout: float = READY_TIMEOUT,
                 stop: Callable[[], bool] = lambda: False, any_answer: bool = False) -> int:
    """Retry ``GET /`` through the tunnel until it answers 200 (any status below 500
    with ``any_answer``); return the status.

    Raises ServerError after ``timeout`` s (with the last answer or error),
    KeyboardInterrupt when ``stop()`` turns true.
    """
    import http.client

    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        try:
            status = http_status(base_url, token)
            if status == 200 or (any_answer and status < 500):
                return status
            last = f"HTTP {status}"
        except (OSError, http.client.HTTPException) as exc:
            last = f"{type(exc).__name__}: {exc}"
        if stop():
            raise KeyboardInterrupt
        if time.monotonic() >= deadline:
            raise ServerError(f"the payload did not answer through the tunnel within "
                              f"{timeout:g} s ({last})")
        time.sleep(HTTP_RETRY)


def watch_loop(check: Callable[[bool], Ending | None], *,
               time_left: Callable[[], float | None], warn_at: int, job_id: str,
               stop: threading.Event, warn: Callable[[str], None], backoff: Backoff,
               on_lost: Callable[[FireflyHPCError], None], on_back: Callable[[float], None],
               pauses: PauseDetector) -> Ending:
    """Call ``check(thorough)`` with ``backoff`` until it returns an :class:`Ending` or
    ``stop`` is set. ``thorough`` asks the check to make sure of the connection first
    (reconnecting and re-attaching what was lost).

    A check that cannot reach the cluster (SSHError, RemoteTimeoutError) ends nothing:
    ``on_lost`` is told once, and thorough checks go on with backoff until one works
    (``on_back`` gets the seconds it took), for as long as the job may still run (once
    its time limit has passed, the Ending says the connection was lost). A check that
    failed across a pause of this process (a sleeping laptop, SIGSTOP: see
    :mod:`fireflyhpc.clock`) proves nothing: it is repeated at once, thoroughly,
    without telling anyone; so is the first check after any pause. Once the job has
    ``warn_at`` seconds or less left, ``warn`` is told, once. The first check comes
    after the first delay: the opening has just checked everything, and the user's
    first page load through the tunnel should not queue behind a check's commands.
    """
    warned = False
    lost_at: float | None = None  # boottime of the first failure in a row
    pause_retried = False
    thorough = False
    mark = pauses.mark()
    delays = iter(backoff.delays())
    if stop.wait(next(delays)):
        return Ending("stopped", requested=True)
    while True:
        if stop.is_set():
            return Ending("stopped", requested=True)
        if pauses.paused_since(mark):
            log.info("back from a pause of %.0f s: checking the connection", pauses.last_pause)
            thorough = True
        mark = pauses.mark()
        try:
            ending = check(thorough)
        except FireflyHPCError as exc:
            if not unreachable(exc):
                raise
            if lost_at is None and not pause_retried and pauses.paused_since(mark):
                log.info("a check failed across a pause (%s); trying again", exc)
                pause_retried = thorough = True
                continue
            if lost_at is None:
                lost_at = boottime()
                on_lost(exc)
                delays = iter(backoff.delays())  # try again soon, then less often
            else:
                log.info("still cannot reach the cluster: %s", exc)
            thorough = True
            left = time_left()
            if left is not None and left <= 0:
                return Ending(f"lost the connection to the cluster ({exc}), and job {job_id}'s "
                              "time limit has passed meanwhile", requested=False, error=exc)
            ending = None
        else:
            if lost_at is not None:
                on_back(boottime() - lost_at)
                lost_at = None
            pause_retried = thorough = False
        if ending is not None:
            return ending
        left = time_left()
        if not warned and left is not None and left <= warn_at:
            warned = True
            warn(f"job {job_id} reaches its time limit in {jobs.clock_text(left)}; "
                 "the session ends then")
        if stop.wait(next(delays)):
            return Ending("stopped", requested=True)


def job_ending(job_id: str, job: JobInfo | None, time_left: float | None) -> Ending | None:
    """The Ending when ``job`` (squeue's view of ``job_id``) no longer runs, else None."""
    if job is None or not (job.state.running or job.state.waiting):
        message = jobs.end_message(job_id, job, time_left)
        return Ending(message, requested=False, error=SchedulerError(message))
    return None


def server_ending(node: str) -> Ending:
    """The Ending when the payload server on ``node`` has died."""
    message = f"the payload server on {node} stopped"
    return Ending(message, requested=False, error=ServerError(message))
