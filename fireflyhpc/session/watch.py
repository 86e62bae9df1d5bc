"""Is a connect session usable, and is it still alive?

:func:`wait_http_ok` confirms readiness the only way that counts: an HTTP request
through the local end of the tunnel, carrying the token, answered 200.
:func:`watch_loop` then runs a session's check (the job in a batched squeue, the
payload's process group) with backoff until the user stops, the job ends or the
server dies; :func:`job_ending` and :func:`server_ending` word those ends.
"""

from __future__ import annotations

import http.client
import logging
import time
import threading
from typing import Callable
from urllib.parse import urlsplit

from fireflyhpc.errors import FireflyHPCError, SchedulerError, ServerError, SSHError
from fireflyhpc.scheduler import Backoff, JobInfo
from fireflyhpc.session import jobs
from fireflyhpc.session.request import Ending

log = logging.getLogger(__name__)

READY_TIMEOUT = 30.0


def http_status(base_url: str, token: str | None, *, timeout: float = 10.0) -> int:
    """The status of ``GET /`` at ``base_url`` (with ``Authorization: Bearer token``).

    Raises OSError / http.client.HTTPException when no answer comes.
    """
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
        time.sleep(0.2)


def watch_loop(check: Callable[[], Ending | None], *, reconnect: Callable[[], None],
               time_left: Callable[[], float | None], warn_at: int, job_id: str,
               stop: threading.Event, warn: Callable[[str], None], backoff: Backoff,
               max_failures: int) -> Ending:
    """Call ``check`` with ``backoff`` until it returns an :class:`Ending` or ``stop`` is set.

    An SSHError from ``check`` is retried after ``reconnect()``, up to ``max_failures``
    rounds in a row (then the Ending says the connection was lost). Once the job has
    ``warn_at`` seconds or less left, ``warn`` is told, once.
    """
    warned = False
    failures = 0
    for delay in backoff.delays():
        if stop.is_set():
            return Ending("stopped", requested=True)
        try:
            ending = check()
            failures = 0
        except SSHError as exc:
            failures += 1
            log.warning("cannot reach the cluster (%s); retrying", exc)
            if failures >= max_failures:
                return Ending(f"lost the connection to the cluster: {exc}", requested=False,
                              error=exc)
            try:
                reconnect()
            except FireflyHPCError as again:
                log.debug("reconnect failed: %s", again)
            ending = None
        if ending is not None:
            return ending
        left = time_left()
        if not warned and left is not None and left <= warn_at:
            warned = True
            warn(f"job {job_id} reaches its time limit in {jobs.clock_text(left)}; "
                 "the session ends then")
        if stop.wait(delay):
            return Ending("stopped", requested=True)
    raise AssertionError("unreachable")  # pragma: no cover


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
