"""The Slurm side of ``connect``: which job, waiting for it, and watching it end.

Built on :class:`fireflyhpc.scheduler.Scheduler` (one batched squeue per poll,
backing off). Pure helpers (:func:`status_text`, :func:`hopeless_reason`,
:func:`warn_before`, :func:`end_message`) are kept apart from the polling loops.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from fireflyhpc.errors import ConfigError, SchedulerError
from fireflyhpc.hostspec import host_name
from fireflyhpc.scheduler import Backoff, JobInfo, Scheduler, StartEstimate

log = logging.getLogger(__name__)

# Pending reasons that mean the job can never start as submitted: fail at once.
HOPELESS_REASONS = (
    "PartitionTimeLimit", "PartitionNodeLimit", "PartitionConfig", "InvalidAccount",
    "InvalidQOS", "BadConstraints", "QOSMaxWallDurationPerJobLimit", "QOSMaxCpuPerJobLimit",
    "QOSMaxNodePerJobLimit", "AssocMaxWallDurationPerJobLimit", "AssocMaxCpuPerJobLimit",
    "AssocMaxNodePerJobLimit", "JobHeldAdmin", "DependencyNeverSatisfied",
)
WAIT_BACKOFF = Backoff(initial=1.0, factor=1.3, maximum=5.0)
WATCH_BACKOFF = Backoff(initial=1.0, factor=1.5, maximum=5.0)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class JobChoice:
    """The job a session uses, and whether this command submitted it."""

    job: JobInfo
    submitted: bool

    @property
    def node(self) -> str:
        """The (first) node the job runs on."""
        if not self.job.nodes:
            raise SchedulerError(f"job {self.job.job_id} runs on no node that squeue names")
        return self.job.nodes[0]


def clock_text(seconds: float | None) -> str:
    """``H:MM:SS`` (or ``M:SS`` under an hour); ``-`` for None."""
    if seconds is None:
        return "-"
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def status_text(job_id: str, job: JobInfo | None, estimate: StartEstimate | None,
                elapsed: float, now: datetime | None = None) -> str:
    """The live waiting line: id, state, Slurm's reason, start estimate, time waited."""
    state = job.state.value if job else "UNKNOWN"
    parts = [f"job {job_id}", state]
    reason = (job.reason if job else None) or (estimate.reason if estimate else None)
    if reason and reason != "None":
        parts.append(f"reason: {reason}")
    start = estimate.start_time if estimate else None
    if start is not None:
        now = now or datetime.now()
        when = start.strftime("%H:%M:%S") if start.date() == now.date() else \
            start.strftime("%Y-%m-%d %H:%M")
        parts.append(f"expected start: {when}")
    parts.append(f"waited {clock_text(elapsed)}")
    return ", ".join(parts)


def hopeless_reason(job: JobInfo | None) -> str | None:
    """The pending reason if it means the job can never start as asked, else None."""
    if job is None or not job.state.waiting or not job.reason:
        return None
    return job.reason if job.reason.split(",")[0].strip() in HOPELESS_REASONS else None


def warn_before(time_limit: int | None) -> int:
    """Seconds before the end of a job of ``time_limit`` s at which to warn the user."""
    if not time_limit:
        return 300
    return max(15, min(300, time_limit // 10))


def end_message(job_id: str, job: JobInfo | None, time_left: float | None) -> str:
    """Why the job is over, in words (squeue forgets finished jobs fast, so guess well)."""
    state = job.state.value if job is not None else None
    if state == "TIMEOUT" or (state in (None, "COMPLETING") and time_left is not None
                              and time_left <= 20):
        return f"job {job_id} reached its time limit"
    if state == "CANCELLED" or state is None or state == "COMPLETING":
        return f"job {job_id} was cancelled or ended outside fireflyhpc"
    return f"job {job_id} ended ({state})"


def check_node(node: str) -> str:
    """``node`` if it is a plain node name; ConfigError (one line) otherwise."""
    try:
        return host_name(node)
    except ValueError as exc:
        raise ConfigError(f"node {node!r}: {exc}") from None


def find_job(scheduler: Scheduler, *, job_id: str | None, node: str | None) -> JobChoice:
    """The user's running job: ``job_id``, or the one on ``node``.

    Raises ConfigError for a malformed node, SchedulerError when the user has no
    such running job.
    """
    if node is not None:
        check_node(node)
    if job_id is not None:
        jobs = scheduler.jobs([job_id], me=True)
        found = [j for j in jobs if j.job_id == job_id]
        if not found:
            raise SchedulerError(f"you have no job {job_id} in the queue",
                                 hint="see `squeue --me`")
        job = found[0]
        if node is not None and node not in job.nodes:
            raise SchedulerError(f"job {job_id} does not run on {node}")
    else:
        assert node is not None
        running = [j for j in scheduler.jobs(me=True, nodes=[node]) if j.state.running]
        if not running:
            raise SchedulerError(f"you have no running job on {node}",
                                 hint="start one with `fireflyhpc connect` (no NODE), or "
                                      "name a node from `squeue --me`")
        job = running[-1]
    if not job.state.running:
        raise SchedulerError(f"job {job.job_id} is not running ({job.state.value})")
    return JobChoice(job=job, submitted=False)


def wait_until_running(scheduler: Scheduler, job_id: str, progress: Progress, *,
                       stop: Callable[[], bool] = lambda: False,
                       backoff: Backoff = WAIT_BACKOFF,
                       sleep: Callable[[float], None] = time.sleep,
                       clock: Callable[[], float] = time.monotonic) -> JobInfo:
    """Poll ``job_id`` until it runs, reporting each poll through ``progress``.

    Between polls it waits ``backoff``'s delays in steps of at most 0.2 s (by
    ``sleep``, timed by ``clock``), asking ``stop()`` before each step. Raises
    SchedulerError when the job ends first or can never start (Slurm's reason),
    KeyboardInterrupt when ``stop()`` turns true.
    """
    started = clock()
    for delay in backoff.delays():
        job = scheduler.job(job_id)
        if job is not None and job.state.running and job.nodes:
            return job
        if job is None or job.state.finished:
            state = job.state.value if job else "it left the queue"
            raise SchedulerError(f"job {job_id} ended before it started ({state})")
        hopeless = hopeless_reason(job)
        if hopeless:
            raise SchedulerError(f"job {job_id} cannot start: Slurm says {hopeless}",
                                 hint="check --partition, --time, --account against `sinfo`")
        estimate = None
        if job.state.waiting:
            estimate = scheduler.start_estimates([job_id]).get(job_id)
        progress(status_text(job_id, job, estimate, clock() - started))
        end = clock() + delay
        while clock() < end:
            if stop():
                raise KeyboardInterrupt
            sleep(min(0.2, max(0.0, end - clock())))
    raise AssertionError("unreachable")  # pragma: no cover
