"""Helpers of the connect-building-blocks tests (a uniquely named module: every test
area has a conftest, so `from conftest import` would depend on collection order)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Sequence

from fireflyhpc.errors import SSHError
from fireflyhpc.scheduler import Result
from fireflyhpc.ssh.remote import build_command

GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE = os.environ.get("FIREFLYHPC_UPDATE_GOLDEN") == "1"


def check_golden(name: str, text: str) -> None:
    """Compare ``text`` with golden/NAME (rewrite it with FIREFLYHPC_UPDATE_GOLDEN=1)."""
    path = GOLDEN / name
    if UPDATE:
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"missing golden file {path} (run with FIREFLYHPC_UPDATE_GOLDEN=1)"
    assert text == path.read_text(encoding="utf-8"), f"output differs from golden/{name}"


def read_golden(name: str) -> str:
    return (GOLDEN / name).read_text(encoding="utf-8")


def run_cli(*args: str, env: dict[str, str] | None = None,
            cwd: str | os.PathLike[str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real `fireflyhpc` CLI in a subprocess."""
    return subprocess.run([sys.executable, "-m", "fireflyhpc", *args], capture_output=True,
                          text=True, timeout=120, env=env, cwd=cwd, stdin=subprocess.DEVNULL)


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """Assert the process failed with exactly one `fireflyhpc: error:` line; return it."""
    assert proc.returncode != 0, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("fireflyhpc: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def openssh_runner(ssh_config: Path, host: str) -> Callable[..., Result]:
    """A scheduler runner over the real OpenSSH client (quoting by the SSH layer)."""
    def run(argv: Sequence[str], *, input: str | None = None) -> Result:
        proc = subprocess.run(["ssh", "-F", str(ssh_config), "-o", "BatchMode=yes", "--", host,
                               build_command(argv)], input=input, capture_output=True,
                              text=True, timeout=120,
                              stdin=None if input is not None else subprocess.DEVNULL)
        if proc.returncode == 255:  # ssh's own failure, not the command's
            raise SSHError(f"ssh {host}: {proc.stderr.strip()}")
        return Result(proc.returncode, proc.stdout, proc.stderr)
    return run
