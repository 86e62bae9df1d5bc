"""The one error root of fireflyhpc and its families.

Every failure the program expects (bad input, an unreachable host, a refused job)
is raised as a subclass of :class:`FireflyHPCError`. Each family carries the data
that explains it and an :class:`ExitStatus`; the CLI prints ``str(error)`` as one
line and exits with that status. Anything else is a bug and shows a traceback.
"""

from __future__ import annotations

import enum
from typing import Sequence


class ExitStatus(enum.IntEnum):
    """Process exit codes, one per failure family (documented in the README)."""

    OK = 0
    ERROR = 1  # generic, also unexpected bugs
    USAGE = 2  # click's own code for bad command-line usage
    CONFIG = 3  # bad or missing configuration, bad input values
    SSH = 4  # connection, authentication, host keys
    REMOTE_COMMAND = 5  # a remote command failed
    SCHEDULER = 6  # Slurm refused or lost the job
    TUNNEL = 7  # local port busy, forward refused
    SERVER = 8  # the payload server failed to start or died
    LOCAL = 9  # a file or folder on this machine, or a local tool (git, pip), failed
    INTERRUPTED = 130  # Ctrl-C before anything could be cleaned up


class FireflyHPCError(Exception):
    """Root of every error fireflyhpc raises on purpose.

    ``str(err)`` is a complete, one-line message meant for the user;
    ``hint`` (optional) says what to do about it.
    """

    exit_status: ExitStatus = ExitStatus.ERROR

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        text = " ".join(self.message.split())
        if self.hint:
            text += f" ({' '.join(self.hint.split())})"
        return text


class ConfigError(FireflyHPCError):
    """Bad configuration file, profile, template or input value."""

    exit_status = ExitStatus.CONFIG


class SSHError(FireflyHPCError):
    """Could not connect, authenticate, or verify a host key."""

    exit_status = ExitStatus.SSH


class RemoteCommandError(FireflyHPCError):
    """A command run on a remote host exited non-zero.

    Carries the argv, the exit code and the tail of stderr, so the message names
    exactly what failed.
    """

    exit_status = ExitStatus.REMOTE_COMMAND

    def __init__(
        self,
        argv: Sequence[str],
        exit_code: int,
        stderr: str = "",
        *,
        host: str | None = None,
        hint: str | None = None,
        tail_lines: int = 5,
    ) -> None:
        self.argv = list(argv)
        self.exit_code = exit_code
        self.stderr = stderr
        self.host = host
        import shlex

        tail = " | ".join(line for line in stderr.strip().splitlines()[-tail_lines:] if line)
        where = f" on {host}" if host else ""
        message = f"`{shlex.join(self.argv)}`{where} exited {exit_code}"
        if tail:
            message += f": {tail}"
        super().__init__(message, hint=hint)


class SchedulerError(FireflyHPCError):
    """Slurm refused a job, lost it, or printed something we could not parse.

    ``raw`` keeps the scheduler's own output for parse errors.
    """

    exit_status = ExitStatus.SCHEDULER

    def __init__(self, message: str, *, raw: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.raw = raw


class TunnelError(FireflyHPCError):
    """The local listener or the forward could not be set up."""

    exit_status = ExitStatus.TUNNEL


class ServerError(FireflyHPCError):
    """The payload server failed to start, or died."""

    exit_status = ExitStatus.SERVER


class LocalError(FireflyHPCError):
    """Something on this machine failed: a file or folder (unreadable, a disk full,
    owned by someone else) or a local tool such as git or pip."""

    exit_status = ExitStatus.LOCAL
