"""Slurm, purely: argv builders for its commands and parsers of what they print.

Nothing here runs a command. Every command is an argv list (quoted later, at the
SSH boundary); output is read by header name, so column order does not matter, and
any parse error is a SchedulerError carrying the raw text.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable, Sequence

from fireflyhpc.errors import SchedulerError
from fireflyhpc.hostspec import host_name
from fireflyhpc.scheduler.nodelist import expand_nodelist

SEP = "|"
# squeue columns: (format code, header Slurm prints for it). NAME goes last, as a job
# name may itself contain the separator.
SQUEUE_FIELDS = (("%i", "JOBID"), ("%T", "STATE"), ("%r", "REASON"), ("%N", "NODELIST"),
                 ("%L", "TIME_LEFT"), ("%S", "START_TIME"), ("%l", "TIME_LIMIT"),
                 ("%M", "TIME"), ("%P", "PARTITION"), ("%u", "USER"), ("%j", "NAME"))
START_FIELDS = (("%i", "JOBID"), ("%S", "START_TIME"), ("%Y", "SCHEDNODES"), ("%r", "REASON"))
SINFO_FIELDS = (("%P", "PARTITION"), ("%a", "AVAIL"), ("%l", "TIMELIMIT"), ("%D", "NODES"),
                ("%c", "CPUS"), ("%m", "MEMORY"), ("%N", "NODELIST"))
_JOB_ID = re.compile(r"[0-9]+(?:_[0-9]+)?")
_NO_VALUE = {"", "N/A", "n/a", "(null)", "None", "Unknown", "NONE"}


class JobState(str, enum.Enum):
    """Slurm job states (squeue's long form); UNKNOWN for anything newer."""

    PENDING = "PENDING"
    CONFIGURING = "CONFIGURING"
    RUNNING = "RUNNING"
    SUSPENDED = "SUSPENDED"
    COMPLETING = "COMPLETING"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"
    TIMEOUT = "TIMEOUT"
    NODE_FAIL = "NODE_FAIL"
    PREEMPTED = "PREEMPTED"
    BOOT_FAIL = "BOOT_FAIL"
    DEADLINE = "DEADLINE"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    REQUEUED = "REQUEUED"
    REQUEUE_FED = "REQUEUE_FED"
    REQUEUE_HOLD = "REQUEUE_HOLD"
    RESIZING = "RESIZING"
    REVOKED = "REVOKED"
    SIGNALING = "SIGNALING"
    SPECIAL_EXIT = "SPECIAL_EXIT"
    STAGE_OUT = "STAGE_OUT"
    STOPPED = "STOPPED"
    RESV_DEL_HOLD = "RESV_DEL_HOLD"
    UNKNOWN = "UNKNOWN"

    @classmethod
    def parse(cls, text: str) -> "JobState":
        """The state named by ``text`` (``CANCELLED by 12`` reads as CANCELLED)."""
        word = text.strip().split(" ")[0].upper() if text.strip() else ""
        try:
            return cls(word)
        except ValueError:
            return cls.UNKNOWN

    @property
    def waiting(self) -> bool:
        """Not started yet, but may still start."""
        return self in (JobState.PENDING, JobState.CONFIGURING, JobState.REQUEUED,
                        JobState.REQUEUE_HOLD, JobState.REQUEUE_FED, JobState.RESV_DEL_HOLD)

    @property
    def running(self) -> bool:
        """Holding its nodes and able to run commands there."""
        return self is JobState.RUNNING

    @property
    def finished(self) -> bool:
        """Over for good (the nodes are being, or have been, released)."""
        return not (self.waiting or self.running or self in (
            JobState.SUSPENDED, JobState.RESIZING, JobState.SIGNALING, JobState.STOPPED,
            JobState.UNKNOWN))


@dataclass(frozen=True)
class JobInfo:
    """One row of squeue, typed."""

    job_id: str
    state: JobState
    reason: str | None = None
    nodes: tuple[str, ...] = ()
    time_left: int | None = None  # seconds; None when unlimited or unknown
    start_time: datetime | None = None  # actual start, or Slurm's estimate while pending
    time_limit: int | None = None  # seconds
    elapsed: int | None = None  # seconds
    partition: str | None = None
    user: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class StartEstimate:
    """One row of ``squeue --start``: when and where a pending job should start."""

    job_id: str
    start_time: datetime | None
    nodes: tuple[str, ...]
    reason: str | None


@dataclass(frozen=True)
class Partition:
    """One partition from sinfo (rows of the same partition merged)."""

    name: str
    default: bool
    available: bool
    time_limit: int | None  # seconds; None when infinite
    node_count: int
    nodes: tuple[str, ...]
    cpus: str | None = None
    memory: str | None = None


def _format(fields: Iterable[tuple[str, str]]) -> str:
    return SEP.join(code for code, _ in fields)


def _job_ids(job_ids: Iterable[str]) -> list[str]:
    ids = [str(j) for j in job_ids]
    for job_id in ids:
        if not _JOB_ID.fullmatch(job_id):
            raise SchedulerError(f"not a Slurm job id: {job_id!r}")
    return ids


def sbatch_argv(extra: Sequence[str] = ()) -> list[str]:
    """``sbatch --parsable``: the script comes on stdin, the job id goes to stdout."""
    return ["sbatch", "--parsable", *extra]


def squeue_argv(job_ids: Iterable[str] = (), *, user: str | None = None, me: bool = False,
                nodes: Sequence[str] = (), states: Sequence[str] = ()) -> list[str]:
    """squeue with our explicit ``-o`` format (header kept), filtered as asked."""
    argv = ["squeue", "-o", _format(SQUEUE_FIELDS)]
    ids = _job_ids(job_ids)
    if ids:
        argv += ["-j", ",".join(ids)]
    if user:
        argv += ["-u", user]
    elif me:
        argv.append("--me")
    if nodes:
        argv += ["-w", ",".join(host_name(n) for n in nodes)]
    if states:
        bad = [s for s in states if not re.fullmatch(r"[A-Za-z_]{1,20}", s)]
        if bad:
            raise SchedulerError(f"not a Slurm job state: {bad[0]!r}")
        argv += ["-t", ",".join(states)]
    return argv


def squeue_start_argv(job_ids: Iterable[str]) -> list[str]:
    """``squeue --start`` for ``job_ids``: Slurm's start estimate of pending jobs."""
    return ["squeue", "--start", "-o", _format(START_FIELDS), "-j", ",".join(_job_ids(job_ids))]


def scancel_argv(job_ids: Iterable[str]) -> list[str]:
    """``scancel ID...``."""
    ids = _job_ids(job_ids)
    if not ids:
        raise SchedulerError("scancel needs at least one job id")
    return ["scancel", *ids]


def squeue_state_argv(job_id: str) -> list[str]:
    """squeue printing one word, the job's state, and no header (for shell scripts on
    the cluster, which read the state without our parser)."""
    return ["squeue", "-h", "-o", "%T", "-j", _job_ids([job_id])[0]]


def srun_step_argv(job_id: str, node: str, *, error_file: str,
                   name: str = "fireflyhpc-payload") -> list[str]:
    """``srun`` starting one task as a step of the running job ``job_id`` on ``node``
    (``--overlap``: beside whatever the job runs); the task's argv follows it. No
    stdin, stdout discarded, stderr appended to ``error_file`` (srun's own messages
    may go there too)."""
    return ["srun", f"--jobid={_job_ids([job_id])[0]}", "--overlap", "--nodes=1",
            "--ntasks=1", f"--nodelist={host_name(node)}", "--input=none",
            "--output=/dev/null", f"--error={error_file}", "--open-mode=append",
            f"--job-name={name}"]


def sinfo_argv() -> list[str]:
    """sinfo with our explicit ``-o`` format: one row per partition (and node group)."""
    return ["sinfo", "-o", _format(SINFO_FIELDS)]


def parse_sbatch(stdout: str) -> str:
    """The job id from ``sbatch --parsable`` (``ID`` or ``ID;cluster``)."""
    lines = [line for line in stdout.strip().splitlines() if line.strip()]
    job_id = lines[-1].split(";")[0].strip() if lines else ""
    if not _JOB_ID.fullmatch(job_id):
        raise SchedulerError(f"sbatch printed no job id: {stdout.strip()[:200]!r}", raw=stdout)
    return job_id


def _table(raw: str, required: Sequence[str], command: str) -> list[dict[str, str]]:
    """Rows of SEP-separated ``raw`` as dicts keyed by header name."""
    lines = [line for line in raw.splitlines() if line.strip()]
    if not lines:
        raise SchedulerError(f"{command} printed nothing (not even its header)", raw=raw)
    header = [h.strip() for h in lines[0].split(SEP)]
    missing = [name for name in required if name not in header]
    if missing:
        raise SchedulerError(f"{command} output lacks column(s) {', '.join(missing)}: "
                             f"header {lines[0].strip()[:200]!r}", raw=raw)
    rows = []
    for line in lines[1:]:
        cells = line.split(SEP, len(header) - 1)
        if len(cells) != len(header):
            raise SchedulerError(f"{command} row has {len(cells)} columns, header has "
                                 f"{len(header)}: {line[:200]!r}", raw=raw)
        rows.append({h: c.strip() for h, c in zip(header, cells)})
    return rows


def parse_duration(text: str) -> int | None:
    """Seconds in Slurm's printed ``[D-][[H:]M:]S`` durations; None for UNLIMITED etc."""
    text = text.strip()
    match = re.fullmatch(r"(?:(\d+)-)?(?:(?:(\d+):)?(\d+):)?(\d+)", text)
    if not match:
        return None
    d, h, m, s = (int(g) if g else 0 for g in match.groups())
    return ((d * 24 + h) * 60 + m) * 60 + s


def parse_timestamp(text: str) -> datetime | None:
    """Slurm's ``YYYY-MM-DDTHH:MM:SS`` (local time, naive); None for N/A and the like."""
    text = text.strip()
    if text in _NO_VALUE:
        return None
    if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", text):
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _optional(text: str | None) -> str | None:
    return None if text is None or text.strip() in _NO_VALUE else text.strip()


def parse_squeue(raw: str) -> list[JobInfo]:
    """Jobs from squeue output in :data:`SQUEUE_FIELDS` (any order, extra columns ok)."""
    jobs = []
    for row in _table(raw, ("JOBID", "STATE"), "squeue"):
        if not _JOB_ID.fullmatch(row["JOBID"]):
            raise SchedulerError(f"squeue printed a bad job id {row['JOBID']!r}", raw=raw)
        jobs.append(JobInfo(
            job_id=row["JOBID"], state=JobState.parse(row["STATE"]),
            reason=_optional(row.get("REASON")),
            nodes=tuple(expand_nodelist(row.get("NODELIST", ""))),
            time_left=parse_duration(row.get("TIME_LEFT", "")),
            start_time=parse_timestamp(row.get("START_TIME", "")),
            time_limit=parse_duration(row.get("TIME_LIMIT", "")),
            elapsed=parse_duration(row.get("TIME", "")),
            partition=_optional(row.get("PARTITION")), user=_optional(row.get("USER")),
            name=row.get("NAME")))
    return jobs


def parse_squeue_start(raw: str) -> list[StartEstimate]:
    """Rows of ``squeue --start`` output in :data:`START_FIELDS`."""
    return [StartEstimate(job_id=row["JOBID"], start_time=parse_timestamp(row["START_TIME"]),
                          nodes=tuple(expand_nodelist(row.get("SCHEDNODES", ""))),
                          reason=_optional(row.get("REASON")))
            for row in _table(raw, ("JOBID", "START_TIME"), "squeue --start")]


def parse_sinfo(raw: str) -> list[Partition]:
    """Partitions from sinfo output in :data:`SINFO_FIELDS`, merged by name, in order."""
    merged: dict[str, Partition] = {}
    for row in _table(raw, ("PARTITION",), "sinfo"):
        name = row["PARTITION"].rstrip("*")
        count = row.get("NODES", "0")
        if not count.isdigit():
            raise SchedulerError(f"sinfo printed a bad node count {count!r}", raw=raw)
        part = Partition(name=name, default=row["PARTITION"].endswith("*"),
                         available=row.get("AVAIL", "up") == "up",
                         time_limit=parse_duration(row.get("TIMELIMIT", "")), node_count=int(count),
                         nodes=tuple(expand_nodelist(row.get("NODELIST", ""))),
                         cpus=_optional(row.get("CPUS")), memory=_optional(row.get("MEMORY")))
        if name in merged:
            old = merged[name]
            part = Partition(name, old.default or part.default, old.available or part.available,
                             old.time_limit, old.node_count + part.node_count,
                             old.nodes + part.nodes, old.cpus, old.memory)
        merged[name] = part
    return list(merged.values())


def slurm_message(stderr: str) -> str:
    """Slurm's own error lines from ``stderr``, joined into one line."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()] or lines[-1:]
    prefix = re.compile(r"^(?:[a-z_]+(?::\s*|\s+(?=error:)))?(?:error:\s*)?", re.IGNORECASE)
    return "; ".join(prefix.sub("", line, count=1) for line in errors)
