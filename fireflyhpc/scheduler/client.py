"""Running Slurm commands through a runner: over SSH in real use, locally in tests.

A runner is any callable ``run(argv, input=None)`` returning an object with
``exit_code``, ``stdout`` and ``stderr`` (the shape of the SSH layer's ``Result``),
or raising :class:`~fireflyhpc.errors.RemoteCommandError` for a non-zero exit. The
:class:`Scheduler` builds argv with :mod:`fireflyhpc.scheduler.slurm`, runs it, and
turns failures into SchedulerError carrying Slurm's own message.
"""

from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass
from typing import Iterable, Iterator, Protocol, Sequence

from fireflyhpc.errors import RemoteCommandError, SchedulerError
from fireflyhpc.scheduler import slurm
from fireflyhpc.scheduler.slurm import JobInfo, Partition, StartEstimate

log = logging.getLogger(__name__)


class CommandResult(Protocol):
    """What a runner returns (the SSH layer's ``Result`` has this shape)."""

    @property
    def exit_code(self) -> int: ...

    @property
    def stdout(self) -> str: ...

    @property
    def stderr(self) -> str: ...


class Runner(Protocol):
    """Runs one argv (optionally feeding ``input`` on stdin) and returns its result."""

    def __call__(self, argv: Sequence[str], *, input: str | None = None) -> CommandResult: ...


@dataclass(frozen=True)
class Result:
    """A finished local command."""

    exit_code: int
    stdout: str
    stderr: str


def local_runner(argv: Sequence[str], *, input: str | None = None) -> Result:
    """Run ``argv`` on this machine (no shell) and capture its output."""
    try:
        proc = subprocess.run(list(argv), input=input, capture_output=True, text=True,
                              timeout=120, check=False)
    except FileNotFoundError:
        return Result(127, "", f"{argv[0]}: command not found")
    return Result(proc.returncode, proc.stdout, proc.stderr)


@dataclass(frozen=True)
class Backoff:
    """Poll delays: ``initial`` seconds, times ``factor`` each poll, at most ``maximum``."""

    initial: float = 1.0
    factor: float = 1.5
    maximum: float = 15.0

    def delays(self) -> Iterator[float]:
        """The endless sequence of delays between polls."""
        delay = self.initial
        while True:
            yield delay
            delay = min(delay * self.factor, self.maximum)


class Scheduler:
    """Slurm through a runner: submit, query, cancel, list partitions."""

    def __init__(self, run: Runner, *, where: str = "") -> None:
        self._run = run
        self.where = where
        self._user: str | None = None

    def _call(self, argv: list[str], input: str | None = None) -> CommandResult:
        log.debug("slurm%s: %s", f" on {self.where}" if self.where else "", argv)
        try:
            result = self._run(argv, input=input)
        except RemoteCommandError as exc:
            result = slurm_result(exc.exit_code, "", exc.stderr)
        if result.exit_code == 127 or "command not found" in result.stderr:
            where = f" on {self.where}" if self.where else ""
            raise SchedulerError(f"Slurm's {argv[0]} is not available{where}",
                                 hint="is this a Slurm cluster? a `module load slurm` in "
                                      "the profile's setup may be needed", raw=result.stderr)
        return result

    def _fail(self, what: str, result: CommandResult) -> SchedulerError:
        message = slurm.slurm_message(result.stderr) or f"exit status {result.exit_code}"
        return SchedulerError(f"{what}: {message}", raw=result.stderr + result.stdout)

    def _whoami(self) -> str:
        result = self._call(["id", "-un"])
        name = result.stdout.strip()
        if result.exit_code != 0 or not name or any(c.isspace() for c in name):
            raise self._fail("cannot tell the cluster user name (`id -un`)", result)
        return name

    def submit(self, script: str, extra_args: Sequence[str] = ()) -> str:
        """Submit ``script`` (sent on stdin) with sbatch; return the job id.

        Raises SchedulerError with Slurm's message when sbatch refuses the job.
        """
        result = self._call(slurm.sbatch_argv(extra_args), input=script)
        if result.exit_code != 0:
            raise self._fail("sbatch refused the job", result)
        return slurm.parse_sbatch(result.stdout)

    def jobs(self, job_ids: Iterable[str] = (), *, me: bool = False, user: str | None = None,
             nodes: Sequence[str] = ()) -> list[JobInfo]:
        """Jobs in the queue matching the filters (one squeue call).

        Jobs that have left the queue are simply absent.
        """
        ids = list(job_ids)
        if me and not user and self._user:
            user = self._user  # this Slurm has no --me (see below)
        result = self._call(slurm.squeue_argv(ids, me=me, user=user, nodes=nodes))
        if result.exit_code != 0 and me and not user and "--me" in result.stderr:
            # Slurm before 20.11 has no --me: ask for the user name once, then use -u.
            self._user = self._whoami()
            result = self._call(slurm.squeue_argv(ids, user=self._user, nodes=nodes))
        if result.exit_code != 0:
            if ids and "Invalid job id" in result.stderr:
                return []  # every one of them has left the queue
            raise self._fail("squeue failed", result)
        return slurm.parse_squeue(result.stdout)

    def job(self, job_id: str) -> JobInfo | None:
        """The job ``job_id``, or None once it has left the queue."""
        found = {job.job_id: job for job in self.jobs([job_id])}
        return found.get(str(job_id))

    def start_estimates(self, job_ids: Iterable[str]) -> dict[str, StartEstimate]:
        """Slurm's start estimates (``squeue --start``) of those jobs still pending."""
        ids = list(job_ids)
        if not ids:
            return {}
        result = self._call(slurm.squeue_start_argv(ids))
        if result.exit_code != 0:
            if "Invalid job id" in result.stderr:
                return {}
            raise self._fail("squeue --start failed", result)
        return {row.job_id: row for row in slurm.parse_squeue_start(result.stdout)}

    def cancel(self, job_ids: Iterable[str]) -> None:
        """scancel the jobs; a job that already ended is not an error."""
        ids = list(job_ids)
        if not ids:
            return
        result = self._call(slurm.scancel_argv(ids))
        if result.exit_code != 0 and not _already_gone(result.stderr):
            raise self._fail(f"scancel {' '.join(ids)} failed", result)

    def partitions(self) -> list[Partition]:
        """The partitions sinfo shows this user."""
        result = self._call(slurm.sinfo_argv())
        if result.exit_code != 0:
            raise self._fail("sinfo failed", result)
        return slurm.parse_sinfo(result.stdout)

    def poll(self, job_ids: Sequence[str]) -> dict[str, JobInfo | None]:
        """One batched squeue for ``job_ids``: each id maps to its row, or None if gone."""
        found = {job.job_id: job for job in self.jobs(job_ids)} if job_ids else {}
        return {str(job_id): found.get(str(job_id)) for job_id in job_ids}


def slurm_result(exit_code: int, stdout: str, stderr: str) -> Result:
    """A :class:`Result` (for runners that raise instead of returning failures)."""
    return Result(exit_code, stdout, stderr)


def _already_gone(stderr: str) -> bool:
    text = stderr.lower()
    return "invalid job id" in text or "already completing or completed" in text
