"""Helpers of the connect end-to-end tests: the real `fireflyhpc connect` CLI as a
subprocess against the mini cluster, and ways to look for anything it left behind."""

from __future__ import annotations

import http.client
import json
import os
import re
import select
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence
from urllib.parse import parse_qs, urlsplit

import psutil

URL_LINE = re.compile(r"^http://127\.0\.0\.1:(\d+)/\?token=(\S+)$")


@dataclass
class Bench:
    """What every connect test needs: the cluster, a config with the `mini` profile,
    and a private session-state folder for the CLI subprocesses."""

    cluster: object
    config: Path
    state_home: Path
    job_name: str

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FIREFLYHPC_")}
        env["XDG_STATE_HOME"] = str(self.state_home)
        env.pop("DISPLAY", None)
        env.pop("WAYLAND_DISPLAY", None)
        return env

    def argv(self, *args: str, config: Path | None = None) -> list[str]:
        return [sys.executable, "-m", "fireflyhpc", "--ssh-config",
                str(self.cluster.ssh_config), "--config", str(config or self.config), *args]

    def run(self, *args: str, timeout: float = 120, config: Path | None = None
            ) -> subprocess.CompletedProcess[str]:
        """Run the CLI to completion."""
        return subprocess.run(self.argv(*args, config=config), capture_output=True, text=True,
                              timeout=timeout, env=self.env(), stdin=subprocess.DEVNULL)

    def connect(self, *args: str, config: Path | None = None) -> "ConnectRun":
        """Start `connect --cluster mini --no-browser ARGS` in the background."""
        proc = subprocess.Popen(self.argv("connect", "--cluster", "mini", "--no-browser", *args,
                                          config=config),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=self.env(), stdin=subprocess.DEVNULL)
        return ConnectRun(proc)

    # -- the cluster, as the user ---------------------------------------------------
    def squeue(self) -> dict[str, str]:
        """The bench user's jobs of this test session (by job name): id -> state."""
        out = self.cluster.ssh("login1", ["squeue", "--me", "-h", "-n", self.job_name,
                                          "-o", "%i %T"], check=True)
        return dict(line.split() for line in out.stdout.splitlines() if line.strip())

    def sbatch(self, *args: str) -> str:
        """Submit a holding job as the bench user; return its id."""
        out = self.cluster.ssh("login1", ["sbatch", "--parsable", "--output=/dev/null",
                                          f"--job-name={self.job_name}", *args,
                                          "--wrap", "sleep 600"], check=True)
        return out.stdout.strip().split(";")[0]

    def wait_running(self, job_id: str, timeout: float = 60) -> str:
        """Wait until ``job_id`` runs; return its node."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.cluster.ssh("login1", ["squeue", "-h", "-j", job_id, "-o", "%T %N"])
            words = out.stdout.split()
            if len(words) == 2 and words[0] == "RUNNING":
                return words[1]
            time.sleep(0.5)
        raise AssertionError(f"job {job_id} did not start within {timeout} s")

    def scancel(self, *job_ids: str) -> None:
        """Cancel the jobs as the user (over ssh); as root inside login1 if that failed."""
        if job_ids and self.cluster.ssh("login1", ["scancel", *job_ids]).returncode != 0:
            self.cluster.run_in("login1", ["scancel", *job_ids])

    def payloads(self, job_id: str) -> list[psutil.Process]:
        """Payload processes of ``job_id`` (from its run folder name) in any node's netns."""
        nets = {_netns_inode(self.cluster.netns(n)): n for n in self.cluster.nodes}
        found = []
        for proc in psutil.process_iter(["cmdline", "username"]):
            cmd = " ".join(proc.info["cmdline"] or [])
            if f".fireflyhpc/run/{job_id}-" in cmd and "fireflyhpc serve" in cmd:
                try:
                    net = os.readlink(f"/proc/{proc.pid}/ns/net")
                except OSError:
                    continue
                if any(f"[{ino}]" in net for ino in nets):
                    found.append(proc)
        return found

    def sessions(self) -> list[dict[str, object]]:
        out = self.run("status", "--json", timeout=60)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)["sessions"]


def _netns_inode(name: str) -> int:
    return os.stat(f"/run/netns/{name}").st_ino


class ConnectRun:
    """A running `fireflyhpc connect` subprocess; threads collect its stdout and stderr."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.stdout_lines: list[str] = []
        self._err: list[str] = []
        self._cond = threading.Condition()
        self._threads = [threading.Thread(target=self._pump, args=(proc.stdout, self.stdout_lines),
                                          daemon=True),
                         threading.Thread(target=self._pump, args=(proc.stderr, self._err),
                                          daemon=True)]
        for thread in self._threads:
            thread.start()

    def _pump(self, stream, into: list[str]) -> None:  # type: ignore[no-untyped-def]
        for line in stream:
            with self._cond:
                into.append(line)
                self._cond.notify_all()
        with self._cond:
            into.append("")  # EOF marker
            self._cond.notify_all()

    @property
    def stderr_text(self) -> str:
        with self._cond:
            return "".join(self._err)

    def _wait_line(self, lines: list[str], pattern: str, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in lines[seen:]:
                    if line == "":
                        return None
                    if re.search(pattern, line):
                        return line.rstrip("\n")
                seen = len(lines)
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def wait_url(self, timeout: float = 90) -> str:
        """The URL line it prints on stdout once ready (fails with its stderr if it ends)."""
        line = self._wait_line(self.stdout_lines, r"^http://", timeout)
        if line is None:
            rc = self.stop(signal.SIGINT)
            raise AssertionError(f"connect printed no URL (rc {rc}):\n{self.stderr_text}")
        return line.strip()

    def read_stderr_until(self, pattern: str, timeout: float = 60) -> str:
        """The first stderr line matching ``pattern`` (waiting for it up to ``timeout`` s)."""
        line = self._wait_line(self._err, pattern, timeout)
        if line is None:
            raise AssertionError(f"no stderr line matching {pattern!r}:\n{self.stderr_text}")
        return line

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60) -> int:
        """Send ``sig`` (if running), wait; return the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.finish(timeout)

    def finish(self, timeout: float = 60) -> int:
        """Wait for it to end by itself; return the exit status."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for thread in self._threads:
            thread.join(timeout=10)
        return self.proc.returncode


def url_parts(url: str) -> tuple[int, str]:
    """(local port, token) of a connect URL."""
    match = URL_LINE.match(url)
    assert match, url
    return int(match.group(1)), parse_qs(urlsplit(url).query)["token"][0]


def http_get(port: int, path: str, token: str | None, host: str = "127.0.0.1",
             timeout: float = 20) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def port_free(port: int) -> bool:
    """True if 127.0.0.1:port can be bound again (nothing listens there). A closed
    connection of the old listener may still be in TIME_WAIT on that port: like any
    server (our tunnel included), bind with SO_REUSEADDR, which only a listener stops."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_for(check, timeout: float, step: float = 0.25) -> bool:  # type: ignore[no-untyped-def]
    """Poll ``check()`` until true or ``timeout`` s passed; return the last result."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return bool(check())
        time.sleep(step)


def assert_nothing_left(bench: Bench, job_id: str, port: int | None,
                        *, job_gone: bool = True, timeout: float = 15) -> None:
    """No payload of ``job_id`` on any node, the local port free, no session entry;
    and (``job_gone``) the job out of the queue, all within ``timeout`` s."""
    if job_gone:
        assert wait_for(lambda: job_id not in bench.squeue(), timeout), \
            f"job {job_id} still queued: {bench.squeue()}"
    assert wait_for(lambda: not bench.payloads(job_id), timeout), \
        [p.cmdline() for p in bench.payloads(job_id)]
    if port is not None:
        assert port_free(port)
    assert not [s for s in bench.sessions() if s.get("job_id") == job_id]


def one_error_line(stderr: str) -> str:
    """The single `fireflyhpc: error:` line of ``stderr`` (and no traceback)."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("fireflyhpc: error:")]
    assert len(errors) == 1, stderr
    return errors[0]


def ssh_lines(bench: Bench, host: str, argv: Sequence[str], user: str | None = None) -> str:
    out = bench.cluster.ssh(host, list(argv), user=user)
    return out.stdout


# -- the node's side of connect, run on this machine ------------------------------------

SLURM_STAND_INS = {
    # Slurm cannot run outside the bench: these answer like it for the lifeline tests.
    # squeue prints the state in $HOME/job-state (RUNNING if none); scancel notes its ids.
    "squeue": '#!/bin/sh\ncat "$HOME/job-state" 2>/dev/null || echo RUNNING\n',
    "scancel": '#!/bin/sh\nprintf \'%s\\n\' "$*" >>"$HOME/scancelled"\n',
}


class LocalRunner:
    """Runs launch argv on this machine in a real shell, like sshd would (cwd = HOME).

    With ``slurm=True``, stand-ins for squeue and scancel (:data:`SLURM_STAND_INS`)
    come first on PATH.
    """

    def __init__(self, home: Path, *, slurm: bool = False) -> None:
        self.home = home
        self.env = {**os.environ, "HOME": str(home)}
        if slurm:
            bin_dir = home / "slurm-bin"
            bin_dir.mkdir(exist_ok=True)
            for name, text in SLURM_STAND_INS.items():
                (bin_dir / name).write_text(text)
                (bin_dir / name).chmod(0o755)
            self.env["PATH"] = f"{bin_dir}:{os.environ['PATH']}"

    def run(self, argv, *, timeout=None, check=True, input=None):  # type: ignore[no-untyped-def]
        from fireflyhpc.errors import RemoteCommandError
        from fireflyhpc.ssh import Result

        proc = subprocess.run(["sh", "-c", shlex.join(argv)], input=input, text=True,
                              capture_output=True, timeout=timeout, env=self.env, cwd=self.home)
        if check and proc.returncode != 0:
            raise RemoteCommandError(list(argv), proc.returncode, proc.stderr)
        return Result(tuple(argv), proc.returncode, proc.stdout, proc.stderr)

    def start(self, argv: Sequence[str]) -> "LocalCommand":
        """Start ``argv`` and leave it running, its stdin a pipe from us (as sshd would
        with a channel: closing our end is the connection going away)."""
        return LocalCommand(subprocess.Popen(
            ["sh", "-c", shlex.join(argv)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, env=self.env, cwd=self.home))


class LocalCommand:
    """A command of :meth:`LocalRunner.start` (what a RemoteProcess is over SSH)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self._buffer = b""

    def write(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def readline(self, timeout: float | None = None) -> bytes | None:
        """The next line with its newline; b"" at EOF; None if none came in time."""
        assert self.proc.stdout is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            if select.select([self.proc.stdout], [], [], left)[0]:
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    rest, self._buffer = self._buffer, b""
                    return rest
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line + b"\n"

    def close_stdin(self) -> None:
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()

    def poll(self) -> int | None:
        return self.proc.poll()

    def wait(self, timeout: float | None = None) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self) -> None:
        self.close_stdin()
        if self.proc.stdout:
            self.proc.stdout.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
