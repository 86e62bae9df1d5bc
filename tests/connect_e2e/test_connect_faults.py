"""What laptops do to a connect session, on the mini cluster: the link drops, the process
sleeps, the login node's sshd restarts. Each test ends with the same URL answering 200,
the same server (port and process) and the same job still running. And a connect that
is killed outright leaves its server to the node for the grace period: a second
`connect --job ID` within it takes the same server back. (That the grace period then
really ends server and job is test_connect_e2e.py's killed-hard test.) With
`launch = "srun"` the same holds: the step's srun, held on the login node, outlives
the connection that started it.

The time from the repair (link up, sshd accepting again, SIGCONT) to the first 200
through the same URL is printed as ``recovery: FAULT: N.N s`` (run with -s to see it)."""

from __future__ import annotations

import http.client
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from connect_e2e_helpers import ConnectRun, assert_nothing_left, http_get, url_parts, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.cluster_fault]


@dataclass
class Live:
    """A connect session as a user sees it: the URL, and what must survive a fault."""

    run: ConnectRun
    port: int
    token: str
    job_id: str
    node: str
    remote_port: int
    server_pid: int
    session_id: str
    pgid: int  # the process group that holds the server: on the node, or srun's on login1

    def ok(self, timeout: float = 5) -> bool:
        try:
            return http_get(self.port, "/", self.token, timeout=timeout)[0] == 200
        except (OSError, http.client.HTTPException):
            return False


def start(bench, *args: str, ssh: str = "auto", launch: str = "ssh",  # type: ignore[no-untyped-def]
          tmp_path: Path | None = None) -> Live:
    """A connect session through the bench profile; ``ssh`` picks the SSH backend,
    ``launch`` the way the payload is started."""
    config = None
    if ssh != "auto" or launch != "ssh":
        assert tmp_path is not None
        config = tmp_path / f"fireflyhpc-{ssh}-{launch}.toml"  # the profile is the last table
        lines = [ln for ln in bench.config.read_text().splitlines() if not ln.startswith("launch")]
        config.write_text("\n".join([*lines, f'ssh = "{ssh}"', f'launch = "{launch}"', ""]))
    run = bench.connect(*args, config=config)
    port, token = url_parts(run.wait_url())
    children = {p.name() for p in psutil.Process(run.proc.pid).children(recursive=True)}
    assert ("ssh" in children) == (ssh == "auto"), (ssh, children)  # the backend in use
    record = next(s for s in bench.sessions() if s["local_port"] == port)
    assert record["launch"] == launch
    (server,) = bench.payloads(record["job_id"])
    return Live(run, port, token, record["job_id"], record["node"], record["remote_port"],
                server.pid, record["id"], record["remote_pgid"])


def recovery(live: Live, what: str, since: float | None, timeout: float = 120) -> float:
    """Seconds from ``since`` (time.monotonic) to the first 200 through the same URL."""
    assert since is not None
    assert wait_for(lambda: live.ok(), timeout, step=0.2), f"no 200 after {what}"
    took = time.monotonic() - since
    print(f"\nrecovery: {what}: {took:.1f} s")
    return took


def says(live: Live, text: str, timeout: float = 30) -> bool:
    """Whether connect's stderr shows ``text`` within ``timeout`` s. The watch reports a
    recovery once its check has gone through, which is after the page (and the new
    lifeline) already work: asking at once would race it."""
    return wait_for(lambda: text in live.run.stderr_text, timeout)


def record(bench, live: Live) -> dict:  # type: ignore[no-untyped-def]
    (found,) = [s for s in bench.sessions() if s.get("job_id") == live.job_id]
    return found


def assert_same_session(bench, live: Live) -> None:  # type: ignore[no-untyped-def]
    """The same URL answers, connect still runs, the same server serves the same job,
    and the session is connected again (not reconnecting)."""
    assert live.ok(timeout=20)
    assert live.run.proc.poll() is None, live.run.stderr_text
    assert bench.squeue().get(live.job_id) == "RUNNING"
    assert [p.pid for p in bench.payloads(live.job_id)] == [live.server_pid]
    assert wait_for(lambda: record(bench, live)["reconnecting_since"] is None, 60), \
        live.run.stderr_text
    found = record(bench, live)
    assert (found["remote_port"], found["local_port"]) == (live.remote_port, live.port)
    assert found["remote_pgid"] == live.pgid and psutil.pid_exists(live.pgid)
    assert not run_folder(bench, live).joinpath("token").exists()  # held again: not on disk


def run_folder(bench, live: Live) -> Path:  # type: ignore[no-untyped-def]
    return bench.cluster.home() / ".fireflyhpc" / "run" / f"{live.job_id}-{live.session_id}"


def generation(bench, live: Live) -> str:  # type: ignore[no-untyped-def]
    return run_folder(bench, live).joinpath("attached").read_text().strip()


def end(live: Live, bench) -> None:  # type: ignore[no-untyped-def]
    assert live.run.stop(signal.SIGINT) == 0, live.run.stderr_text
    assert_nothing_left(bench, live.job_id, live.port)


def stop_tree(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


# The 20 s outage and the sshd restart run on both backends: OpenSSH (the default) and
# the paramiko fallback.
@pytest.mark.parametrize("ssh", ["auto", "paramiko"])
def test_link_down_20_s_then_connect_stopped_45_s(bench, ssh: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    live = start(bench, ssh=ssh, tmp_path=tmp_path)
    try:
        waited: list[bool] = []
        with bench.cluster.link_down() as outage:
            time.sleep(2)
            # A browser request made during the outage waits for the tunnel to come back.
            request = threading.Thread(target=lambda: waited.append(live.ok(timeout=120)))
            request.start()
            time.sleep(18)
        recovery(live, "link down 20 s", outage.restored)
        request.join(timeout=150)
        assert waited == [True], "the request made during the outage is served after it"
        live.run.proc.send_signal(signal.SIGSTOP)  # a laptop's sleep
        try:
            time.sleep(45)
        finally:
            live.run.proc.send_signal(signal.SIGCONT)
        recovery(live, "connect stopped 45 s", time.monotonic())
        time.sleep(6)  # the watch checks (every 5 s at most) after the pause
        assert_same_session(bench, live)
    finally:
        end(live, bench)


def test_link_down_90_s(bench) -> None:  # type: ignore[no-untyped-def]
    """On the default backend only (the 20 s outage and the sshd restart run on both;
    each minute of CI counts)."""
    live = start(bench)
    try:
        with bench.cluster.link_down() as outage:
            down_at = time.monotonic()
            # Once a check has failed, `status` says so (and the session goes on).
            assert wait_for(lambda: record(bench, live)["reconnecting_since"] is not None, 80), \
                live.run.stderr_text
            states = bench.run("status").stdout
            assert "reconnecting since " in states, states
            time.sleep(max(0.0, 90 - (time.monotonic() - down_at)))
        recovery(live, "link down 90 s", outage.restored)
        assert_same_session(bench, live)
        assert "lost the connection to the cluster" in live.run.stderr_text
        assert says(live, "reconnected after"), live.run.stderr_text
    finally:
        end(live, bench)


@pytest.mark.parametrize("ssh", ["auto", "paramiko"])
def test_login_sshd_restarted(bench, ssh: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    live = start(bench, ssh=ssh, tmp_path=tmp_path)
    try:
        before = generation(bench, live)
        bench.cluster.restart_sshd(bench.cluster.login_host, sessions_of=live.run.proc.pid)
        recovery(live, "sshd@login1 restarted", time.monotonic())
        # The lifeline's connection went with sshd: connect re-attached a new one.
        assert wait_for(lambda: generation(bench, live) != before, 60), live.run.stderr_text
        assert_same_session(bench, live)
        assert says(live, "reconnected after"), live.run.stderr_text
    finally:
        end(live, bench)
    status = bench.cluster.status()
    assert status.returncode == 0, status.stdout + status.stderr


def test_connect_and_its_ssh_children_stopped_60_s(bench) -> None:  # type: ignore[no-untyped-def]
    live = start(bench)
    try:
        tree = [live.run.proc.pid,
                *(c.pid for c in psutil.Process(live.run.proc.pid).children(recursive=True))]
        assert len(tree) > 1, "connect runs the tunnel's ssh processes"
        stop_tree(tree, signal.SIGSTOP)  # a true sleep: everything of ours stands still
        try:
            time.sleep(60)
        finally:
            stop_tree(list(reversed(tree)), signal.SIGCONT)
        recovery(live, "connect and its ssh stopped 60 s", time.monotonic())
        time.sleep(6)  # the watch checks (every 5 s at most) after the pause
        assert_same_session(bench, live)
    finally:
        end(live, bench)


def test_srun_step_survives_link_down_20_s_and_login_sshd_restarted(  # type: ignore[no-untyped-def]
        bench, tmp_path: Path) -> None:
    """launch = "srun": the step's srun runs detached on login1 and the lifeline holds
    it there; losing the connection that started it is not the end of it."""
    live = start(bench, launch="srun", tmp_path=tmp_path)
    try:
        srun = psutil.Process(live.pgid)
        assert srun.name() == "srun" and os.getpgid(live.pgid) == live.pgid
        with bench.cluster.link_down() as outage:
            time.sleep(20)
        recovery(live, "srun launch: link down 20 s", outage.restored)
        assert_same_session(bench, live)
        before = generation(bench, live)
        bench.cluster.restart_sshd(bench.cluster.login_host, sessions_of=live.run.proc.pid)
        recovery(live, "srun launch: sshd@login1 restarted", time.monotonic())
        # The lifeline's connection (and the one that started srun) went with sshd.
        assert wait_for(lambda: generation(bench, live) != before, 60), live.run.stderr_text
        assert_same_session(bench, live)
        assert says(live, "reconnected after"), live.run.stderr_text
        assert srun.is_running()
        assert "ends once its node notices" not in live.run.stderr_text
    finally:
        end(live, bench)


@pytest.mark.parametrize("launch", ["ssh", "srun"])
def test_second_connect_within_the_grace_period_takes_the_server_back(  # type: ignore[no-untyped-def]
        bench, launch: str, tmp_path: Path) -> None:
    first = start(bench, "--linger", "60s", launch=launch, tmp_path=tmp_path)
    folder = run_folder(bench, first)
    first.run.stop(signal.SIGKILL)
    # The node keeps the server for the grace period: its token waits in the 0600 file.
    assert wait_for(lambda: folder.joinpath("token").exists(), 30)
    assert oct(folder.joinpath("token").stat().st_mode & 0o777) == "0o600"
    held_on = bench.cluster.login_host if launch == "srun" else first.node
    assert folder.joinpath("host").read_text().strip() == held_on
    second = start(bench, "--job", first.job_id, "--linger", "60s", launch=launch,
                   tmp_path=tmp_path)
    assert "reusing the server a lost session left" in second.run.stderr_text
    assert (second.remote_port, second.server_pid) == (first.remote_port, first.server_pid)
    assert second.pgid == first.pgid
    assert second.token == first.token and second.ok()
    assert not folder.joinpath("token").exists()
    # The killed session had submitted the job: leaving now cancels it, at once.
    end(second, bench)
