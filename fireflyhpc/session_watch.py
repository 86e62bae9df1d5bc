"""Is a connect session usable, and is it still alive?

:func:`wait_http_ok` confirms readiness the only way that counts: an HTTP request
through the local end of the tunnel, carrying the token, answered 200.
:func:`watch_session` then follows the job (batched squeue, backing off) and the
payload's process group until the user stops, the job ends or the server dies.
"""

from __future__ import annotations

import http.client
import logging
import time
from typing import TYPE_CHECKING, Callable
from urllib.parse import urlsplit

from fireflyhpc import jobwatch, launch
from fireflyhpc.errors import FireflyHPCError, SchedulerError, ServerError, SSHError
from fireflyhpc.scheduler import Backoff

if TYPE_CHECKING:
    from fireflyhpc.connecting import Ending, Session

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


def watch_session(session: "Session", *, warn: Callable[[str], None], backoff: Backoff,
                  max_failures: int) -> "Ending":
    """See :meth:`fireflyhpc.connecting.Session.watch`."""
    from fireflyhpc.connecting import Ending

    warned = False
    failures = 0
    stop = session.stop_requested
    assert session.job_id is not None
    for delay in backoff.delays():
        if stop.is_set():
            return Ending("stopped", requested=True)
        try:
            ending = _check_once(session)
            failures = 0
        except SSHError as exc:
            failures += 1
            log.warning("cannot reach the cluster (%s); retrying", exc)
            if failures >= max_failures:
                return Ending(f"lost the connection to the cluster: {exc}", requested=False,
                              error=exc)
            _try_reconnect(session)
            ending = None
        if ending is not None:
            return ending
        left = _time_left(session)
        if not warned and left is not None and left <= _warn_at(session):
            warned = True
            warn(f"job {session.job_id} reaches its time limit in {jobwatch.clock_text(left)}; "
                 "the session ends then")
        if stop.wait(delay):
            return Ending("stopped", requested=True)
    raise AssertionError("unreachable")  # pragma: no cover


def _check_once(session: "Session") -> "Ending | None":
    from fireflyhpc.connecting import Ending

    assert session.job_id is not None
    job = session.scheduler().job(session.job_id)
    if job is None or not (job.state.running or job.state.waiting):
        message = jobwatch.end_message(session.job_id, job, _time_left(session))
        return Ending(message, requested=False, error=SchedulerError(message))
    if job.time_left is not None:
        session.time_limit_end = time.time() + job.time_left
    server = session.server
    srun = getattr(session, "_srun", None)
    if srun is not None:
        dead = not srun.alive()
    else:
        dead = server is not None and not launch.payload_alive(session.node_conn(), server)
    if server is not None and dead:
        message = f"the payload server on {server.node} stopped"
        return Ending(message, requested=False, error=ServerError(message))
    return None


def _time_left(session: "Session") -> float | None:
    return None if session.time_limit_end is None else session.time_limit_end - time.time()


def _warn_at(session: "Session") -> int:
    return jobwatch.warn_before(session.time_limit)


def _try_reconnect(session: "Session") -> None:
    try:
        session._login.reconnect()
        session._node_conn = None
    except FireflyHPCError as exc:
        log.debug("reconnect failed: %s", exc)
