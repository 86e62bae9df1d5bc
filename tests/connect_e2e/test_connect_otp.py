"""connect through a two-factor login node (login1 asking a one-time code after the key,
checked by PAM: the ``otp_login`` fixture) with the default SSH backend, OpenSSH.

- Without a ControlMaster of the user's: exactly one question for the whole session,
  and the tunnel rides OpenSSH (no pure-Python data path).
- With the user's own ControlMaster live: no question at all, and the user's master
  outlives connect, even when connect is SIGKILLed.
- Ctrl-C on the terminal: the master connect started is gone.
"""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paramiko
import psutil
import pytest

from connect_e2e_helpers import ConnectRun, assert_nothing_left, http_get, url_parts, wait_for

pytestmark = pytest.mark.cluster


def otp_config(bench, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    """The bench's profile with the two-factor login node as its login."""
    config = tmp_path / "fireflyhpc.toml"
    text = bench.config.read_text()
    assert 'login = "login1"\n' in text
    config.write_text(text.replace('login = "login1"\n', 'login = "login1-otp"\n'))
    return config


def masters_of(pid: int) -> list[psutil.Process]:
    """The ssh ControlMasters among ``pid``'s descendants."""
    found = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            argv = child.cmdline()
        except psutil.NoSuchProcess:
            continue
        if argv and argv[0].endswith("ssh") and "-M" in argv:
            found.append(child)
    return found


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def ssh_user(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ssh", "-F", str(config), "-o", "BatchMode=yes", *args],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_one_question_for_the_whole_session(bench, otp_login, cleanup_jobs, tmp_path,  # type: ignore[no-untyped-def]
                                            monkeypatch) -> None:
    """From Python (a notebook): the code is asked once, through the prompter, and
    covers the job, the payload on the node, the tunnel and the cleanup."""
    import fireflyhpc
    from fireflyhpc.ssh import CallbackPrompter

    monkeypatch.setenv("XDG_STATE_HOME", str(bench.state_home))
    asked: list[str] = []

    def interactive(title, instructions, prompts):  # type: ignore[no-untyped-def]
        asked.append(prompts[0][0])
        return [otp_login.code]

    job_id = bench.sbatch()
    cleanup_jobs.append(job_id)
    bench.wait_running(job_id)
    with fireflyhpc.connect(cluster="mini", job=job_id, config=str(otp_config(bench, tmp_path)),
                            ssh_config=str(otp_login.ssh_config),
                            prompter=CallbackPrompter(interactive=interactive)) as session:
        port, token = url_parts(session.url)
        assert http_get(port, "/datasets.json", token)[0] == 200
        assert "OpenSSH" in (session._tunnel.via or "")
        assert not [t for t in threading.enumerate() if isinstance(t, paramiko.Transport)], \
            "no pure-Python SSH on the data path"
        masters = masters_of(os.getpid())
        assert masters, "fireflyhpc started its own master (the user has none)"
    assert asked == ["(ffuser@login1) Password: "]
    assert_nothing_left(bench, job_id, port, job_gone=False)
    assert wait_for(lambda: not [m for m in masters if alive(m)], 15)


@pytest.fixture
def user_master(otp_login):  # type: ignore[no-untyped-def]
    """The user's own ControlMaster to the two-factor login, started by hand with the
    code typed on a terminal (``ssh -fN``), as centres tell their users to."""
    sockets = Path(tempfile.mkdtemp(prefix="ffcm-"))
    config = otp_login.control_config(sockets)
    run = PtyRun(["sh", "-c", 'ssh -F "$1" -fN login1-otp && sleep 1', "sh", str(config)])
    run.answer(b"Password: ", otp_login.code.encode())
    assert run.wait() == 0, run.seen
    assert ssh_user(config, "-O", "check", "login1-otp").returncode == 0
    yield config
    ssh_user(config, "-O", "exit", "login1-otp")
    subprocess.run(["rm", "-rf", "--", str(sockets)], check=False)


def test_users_master_no_question_and_it_outlives_a_sigkill(bench, otp_login, user_master,  # type: ignore[no-untyped-def]
                                                             tmp_path) -> None:
    """No terminal and no prompter: any question would fail the run. connect rides the
    user's master; SIGKILLed, it leaves that master alive and usable, and the lifeline
    on the node still ends the payload and the job."""
    # --linger 0: a killed connect's server and job end as soon as the node notices
    # (the grace period itself is test_connect_faults.py's)
    argv = [sys.executable, "-m", "fireflyhpc", "--ssh-config", str(user_master), "--config",
            str(otp_config(bench, tmp_path)), "connect", "--cluster", "mini", "--no-browser",
            "--linger", "0"]
    run = ConnectRun(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, env=bench.env(), stdin=subprocess.DEVNULL,
                                      start_new_session=True))
    port, token = url_parts(run.wait_url())
    job_id = next(s for s in bench.sessions() if s["local_port"] == port)["job_id"]
    assert http_get(port, "/datasets.json", token)[0] == 200
    ours = masters_of(run.proc.pid)  # the hops into the node ride the user's master
    assert ours and not [m for m in ours if "login1-otp" in m.cmdline()], \
        "the user's master carries the login"
    run.stop(signal.SIGKILL)
    assert_nothing_left(bench, job_id, port, timeout=30)
    assert ssh_user(user_master, "-O", "check", "login1-otp").returncode == 0
    done = ssh_user(user_master, "login1-otp", "hostname")
    assert done.returncode == 0 and done.stdout.strip() == "login1"


def test_ctrl_c_on_the_terminal_ends_our_master(bench, otp_login, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The command line on a terminal: ssh asks the code there, once; Ctrl-C cleans up
    everything, the master fireflyhpc started included."""
    private = Path(tempfile.mkdtemp(prefix="fft-"))  # short: socket paths are short
    env = {**bench.env(), "TMPDIR": str(private)}
    run = PtyRun([sys.executable, "-m", "fireflyhpc", "--ssh-config", str(otp_login.ssh_config),
                  "--config", str(otp_config(bench, tmp_path)), "connect", "--cluster", "mini",
                  "--no-browser"], env=env)
    run.answer(b"Password: ", otp_login.code.encode())
    url = run.read_until(rb"http://127\.0\.0\.1:\d+/\?token=\S+")
    port, token = url_parts(url.decode())
    assert http_get(port, "/datasets.json", token)[0] == 200
    masters = masters_of(run.pid)
    assert masters
    job_id = next(s for s in bench.sessions() if s["local_port"] == port)["job_id"]
    os.kill(run.pid, signal.SIGINT)
    assert run.wait() == 0, run.seen
    assert run.seen.count(b"Password: ") == 1 and otp_login.code.encode() not in run.seen
    assert_nothing_left(bench, job_id, port)
    assert not [m for m in masters if alive(m)]
    assert not list(private.iterdir()), "the private directory is removed"
    private.rmdir()


class PtyRun:
    """A command whose controlling terminal is a new pty we read and type into."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # child
            os.execvpe(argv[0], argv, env if env is not None else dict(os.environ))
        self.seen = b""
        self._mark = 0

    def read_until(self, pattern: bytes, timeout: float = 120) -> bytes:
        """Read until ``pattern`` (a regex) appears after what was matched before."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while True:
            match = regex.search(self.seen, self._mark)
            if match:
                self._mark = match.end()
                return match.group(0)
            if time.monotonic() > deadline or not self._read(1.0):
                raise AssertionError(f"no {pattern!r} on the terminal: {self.seen[-2000:]!r}")

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return True
        try:
            chunk = os.read(self.fd, 4096)
        except OSError:
            return False
        self.seen += chunk
        return bool(chunk)

    def answer(self, prompt: bytes, text: bytes) -> None:
        self.read_until(re.escape(prompt))
        os.write(self.fd, text + b"\n")

    def wait(self, timeout: float = 90) -> int:
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                done, status = os.waitpid(self.pid, os.WNOHANG)
                if done:
                    return os.waitstatus_to_exitcode(status)
                self._read(0.2)
            os.kill(self.pid, signal.SIGKILL)
            return os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
        finally:
            try:
                while self._read(0.1) and select.select([self.fd], [], [], 0)[0]:
                    pass
            finally:
                os.close(self.fd)
