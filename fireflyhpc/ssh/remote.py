"""Remote commands: the ONE place where argv becomes a shell string, and their results.

sshd hands the command string to the user's login shell, so every argv is joined
with :func:`shlex.join` here and nowhere else (:func:`posix_command`). That text is
read alike by sh, bash, zsh, ksh and dash, and by csh, tcsh and fish as long as it
holds no newline, ``!`` or backslash (csh expands ``!`` and refuses a newline inside
single quotes; fish reads ``\\`` and ``\'`` there as escapes). Many HPC users keep
tcsh as their login shell, so :func:`build_command`, what is sent, hands any other
command to ``sh`` as base64: ``exec sh -c 'eval "$(echo B64 | base64 -d)"'``, words
every one of those shells reads the same way. Environment variables are passed as an
``env K=V ...`` prefix (sshd's AcceptEnv is usually closed), which makes them
visible in ``ps``: never put secrets there, send them on stdin or in a 0600 file.
"""

from __future__ import annotations

import base64
import re
import shlex
from dataclasses import dataclass
from typing import Mapping, Sequence

from fireflyhpc.errors import RemoteCommandError

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# What csh/tcsh or fish read differently from sh, even inside single quotes.
_NOT_EVERY_SHELL = re.compile(r"[\n\r!\\]")


class RemoteTimeoutError(RemoteCommandError):
    """A remote command did not finish in time (it was abandoned; its channel closed)."""


@dataclass(frozen=True)
class Result:
    """What a finished remote command left: exit code and decoded output (UTF-8)."""

    argv: tuple[str, ...]
    exit_code: int
    stdout: str
    stderr: str
    host: str = ""

    @property
    def ok(self) -> bool:
        """True if the command exited 0."""
        return self.exit_code == 0


def posix_command(argv: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    """Quote ``argv`` (with an ``env K=V`` prefix for ``env``) into one POSIX shell
    command (pure; also what logs show).

    Raises ValueError for an empty argv, a non-string item or a bad variable name.
    """
    if isinstance(argv, (str, bytes)) or not argv:
        raise ValueError("a remote command must be a non-empty list of strings")
    if not all(isinstance(item, str) for item in argv):
        raise ValueError(f"remote command items must be strings: {list(argv)!r}")
    prefix: list[str] = []
    if env:
        for name, value in env.items():
            if not _ENV_NAME.match(name):
                raise ValueError(f"bad environment variable name {name!r}")
            prefix.append(f"{name}={value}")
        prefix.insert(0, "env")
    return shlex.join(prefix + list(argv))


def build_command(argv: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    """The command string to send to sshd for ``argv`` (pure): :func:`posix_command`
    where every login shell reads it alike, else that text run by ``sh`` from base64
    (see the module doc). Raises ValueError as :func:`posix_command` does."""
    text = posix_command(argv, env)
    if not _NOT_EVERY_SHELL.search(text):
        return text
    encoded = base64.b64encode(text.encode("utf-8")).decode("ascii")
    return f"exec sh -c 'eval \"$(echo {encoded} | base64 -d)\"'"


# Writes stdin to "$1" atomically, 0600 from creation (the data never is an argument).
_WRITE_FILE = 'umask 077 && tmp=$(mktemp "$1.XXXXXX") && cat > "$tmp" && mv -f -- "$tmp" "$1"'


def write_file_argv(path: str) -> list[str]:
    """The command that writes its stdin to remote ``path`` (0600, atomically; pure)."""
    return ["sh", "-c", _WRITE_FILE, "sh", path]
