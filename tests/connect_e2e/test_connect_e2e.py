"""`fireflyhpc connect` end to end on the mini cluster: the real CLI as a subprocess,
real sshd and Slurm, the payload as the bench user on a compute node."""

from __future__ import annotations

import json
import os
import signal
import stat
import time
from pathlib import Path

import psutil
import pytest

from connect_e2e_helpers import (assert_nothing_left, http_get, one_error_line, port_free,
                                 ssh_lines, url_parts, wait_for)

pytestmark = pytest.mark.cluster

# Connect-stop cycles on one job: each leaks nothing (8 in CI, about 5 s each; set
# FIREFLYHPC_CONNECT_CYCLES for a longer soak).
CYCLES = int(os.environ.get("FIREFLYHPC_CONNECT_CYCLES", "8"))


def _session(bench, job_id: str) -> dict:  # type: ignore[no-untyped-def]
    found = [s for s in bench.sessions() if s.get("job_id") == job_id]
    assert len(found) == 1, bench.sessions()
    return found[0]


def _profile(bench) -> dict:  # type: ignore[no-untyped-def]
    import tomllib

    return dict(tomllib.loads(bench.config.read_text())["clusters"]["mini"])


def _files_holding(top: Path, secret: str, since: float) -> list[Path]:
    """Files below ``top`` changed since ``since`` (epoch s) whose bytes hold ``secret``."""
    found = []
    for folder, _dirs, names in os.walk(top):
        for name in names:
            path = Path(folder, name)
            try:
                info = path.lstat()
                if info.st_mtime >= since and stat.S_ISREG(info.st_mode) and \
                        info.st_size < 2**20 and secret.encode() in path.read_bytes():
                    found.append(path)
            except OSError:  # gone meanwhile (another session's file)
                continue
    return found


def test_connect_submit_serves_viewer_and_ctrl_c_leaves_nothing(bench) -> None:  # type: ignore[no-untyped-def]
    since = time.time() - 2  # file times have coarse granularity on some file systems
    home = bench.cluster.home()
    run = bench.connect()
    url = run.wait_url()
    port, token = url_parts(url)
    record = next(s for s in bench.sessions() if s["local_port"] == port)
    job_id, node, remote_port = record["job_id"], record["node"], record["remote_port"]
    try:
        low, high = _profile(bench)["port_range"]  # the bench profile sets one
        assert low <= remote_port <= high
        assert record["liveness"] == "alive" and record["url"] == url
        assert bench.squeue()[job_id] == "RUNNING"
        status, body = http_get(port, "/", token)
        assert status == 200 and b"<html" in body.lower()
        status, body = http_get(port, "/datasets.json", token)
        assert status == 200 and json.loads(body), body
        assert http_get(port, "/datasets.json", None)[0] == 403
        # The payload runs on the node, as the user, in its own process group.
        procs = bench.payloads(job_id)
        assert len(procs) == 1 and procs[0].username() == bench.cluster.user
        assert os.getpgid(procs[0].pid) == procs[0].pid
        # Another user on the same node: no token in `ps`, no way in without it.
        ps = ssh_lines(bench, node, ["ps", "-eo", "args"], user=bench.cluster.other_user)
        assert "fireflyhpc serve" in ps and token not in ps
        probe = ("import urllib.request, urllib.error, sys\n"
                 "try: urllib.request.urlopen(f'http://127.0.0.1:{sys.argv[1]}/datasets.json')\n"
                 "except urllib.error.HTTPError as e: print(e.code)\n")
        out = ssh_lines(bench, node, ["python3", "-c", probe, str(remote_port)],
                        user=bench.cluster.other_user)
        assert out.strip() == "403"
        # As the README says: on the cluster's shared home the token is only in the
        # payload's registry entry, readable by the user alone; gone when it stops.
        holding = _files_holding(home, token, since)
        assert [p.relative_to(home).parent for p in holding] == \
            [Path(".local/state/fireflyhpc/servers")], holding
        assert stat.S_IMODE(holding[0].stat().st_mode) == 0o600
        assert stat.S_IMODE(holding[0].parent.stat().st_mode) == 0o700
        assert (home / ".fireflyhpc" / "run").stat().st_mode & 0o077 == 0
    finally:
        started = time.monotonic()
        rc = run.stop(signal.SIGINT)
    assert rc == 0, run.stderr_text
    assert "stopped" in run.stderr_text
    assert_nothing_left(bench, job_id, port, timeout=max(1.0, 15 - (time.monotonic() - started)))
    assert _files_holding(home, token, since) == []


def test_connect_attach_by_job_and_by_node_never_cancels(bench, cleanup_jobs) -> None:  # type: ignore[no-untyped-def]
    job_id = bench.sbatch()
    cleanup_jobs.append(job_id)
    node = bench.wait_running(job_id)
    for args, sig in ((("--job", job_id), signal.SIGTERM), ((node,), signal.SIGHUP)):
        run = bench.connect(*args)
        port, token = url_parts(run.wait_url())
        status, body = http_get(port, "/datasets.json", token)
        assert status == 200 and json.loads(body)
        assert _session(bench, job_id)["node"] == node
        assert run.stop(sig) == 0, run.stderr_text
        assert_nothing_left(bench, job_id, port, job_gone=False)
        assert bench.squeue().get(job_id) == "RUNNING"  # attached: the job stays


def test_connect_stop_cycles_leave_nothing(bench, cleanup_jobs) -> None:  # type: ignore[no-untyped-def]
    job_id = bench.sbatch()
    cleanup_jobs.append(job_id)
    bench.wait_running(job_id)
    ports = []
    for _ in range(CYCLES):
        run = bench.connect("--job", job_id)
        port, token = url_parts(run.wait_url())
        ports.append(port)
        assert http_get(port, "/", token)[0] == 200
        sid = _session(bench, job_id)["id"]
        out = bench.run("stop", sid)
        assert out.returncode == 0 and sid in out.stdout, out.stderr
        assert run.finish(30) == 0, run.stderr_text
    assert_nothing_left(bench, job_id, None, job_gone=False)
    assert all(port_free(p) for p in ports)
    assert bench.squeue().get(job_id) == "RUNNING"


def test_connect_detach_reuse_and_stop(bench, cleanup_jobs) -> None:  # type: ignore[no-untyped-def]
    done = bench.run("connect", "--cluster", "mini", "--no-browser", "--detach", timeout=180)
    assert done.returncode == 0, done.stderr
    detached = [s for s in bench.sessions() if s["detached"]]
    assert len(detached) == 1 and detached[0]["submitted_by_us"]
    job_id, remote_port = detached[0]["job_id"], detached[0]["remote_port"]
    cleanup_jobs.append(job_id)
    assert bench.squeue()[job_id] == "RUNNING" and len(bench.payloads(job_id)) == 1
    # A later connect --job reuses that very server (same port, token from the 0600 file)
    # and takes the detached session's place: leaving ends server and job.
    run = bench.connect("--job", job_id)
    port, token = url_parts(run.wait_url())
    assert http_get(port, "/datasets.json", token)[0] == 200
    assert _session(bench, job_id)["remote_port"] == remote_port
    assert "reusing the detached server" in run.read_stderr_until("reusing|Ctrl-C")
    assert not [s for s in bench.sessions() if s["detached"]]
    assert run.stop(signal.SIGINT) == 0
    assert_nothing_left(bench, job_id, port)
    # Detached from a job it only attached to: `stop ID` ends the server over SSH, not the job.
    job_id = bench.sbatch()
    cleanup_jobs.append(job_id)
    bench.wait_running(job_id)
    done = bench.run("connect", "--cluster", "mini", "--no-browser", "--job", job_id,
                     "--detach", timeout=180)
    assert done.returncode == 0, done.stderr
    sid = _session(bench, job_id)["id"]
    assert len(bench.payloads(job_id)) == 1
    out = bench.run("stop", sid)
    assert out.returncode == 0, out.stderr
    assert_nothing_left(bench, job_id, None, job_gone=False)
    assert bench.squeue().get(job_id) == "RUNNING"
    # A detached server whose job ends (here: cancelled from outside) is ended on the node.
    done = bench.run("connect", "--cluster", "mini", "--no-browser", "--job", job_id,
                     "--detach", timeout=180)
    assert done.returncode == 0, done.stderr
    assert len(bench.payloads(job_id)) == 1
    bench.scancel(job_id)
    assert wait_for(lambda: not bench.payloads(job_id), 45)
    run_dir = bench.cluster.home() / ".fireflyhpc" / "run"
    assert wait_for(lambda: not list(run_dir.glob(f"{job_id}-*")), 10)
    assert bench.run("stop", "--all").returncode == 0
    assert bench.sessions() == []


def test_connect_ends_when_the_job_is_cancelled_outside(bench) -> None:  # type: ignore[no-untyped-def]
    run = bench.connect()
    port, _ = url_parts(run.wait_url())
    job_id = next(s for s in bench.sessions() if s["local_port"] == port)["job_id"]
    bench.scancel(job_id)
    rc = run.finish(timeout=30)
    assert rc != 0 and f"job {job_id} was cancelled or ended outside fireflyhpc" in \
        run.stderr_text, run.stderr_text
    assert_nothing_left(bench, job_id, port)


def test_connect_pending_shows_reason_and_ctrl_c_leaves_no_job(bench, cleanup_jobs) -> None:  # type: ignore[no-untyped-def]
    small = bench.cluster.small_partition
    blocker = bench.sbatch("--partition", small, "--exclusive")
    cleanup_jobs.append(blocker)
    bench.wait_running(blocker)
    before = set(bench.squeue())
    run = bench.connect("--partition", small, "--time", "2:00")
    line = run.read_stderr_until(r"PENDING, reason: \w+")
    assert "PENDING" in line and "reason" in line
    mine = set(bench.squeue()) - before
    assert len(mine) == 1
    assert run.stop(signal.SIGINT, timeout=30) == 130, run.stderr_text
    (job_id,) = mine
    assert wait_for(lambda: job_id not in bench.squeue(), 15), bench.squeue()


@pytest.mark.skipif(os.environ.get("FIREFLYHPC_SKIP_SLOW") == "1", reason="slow (time limit)")
def test_connect_ends_at_the_time_limit_with_a_warning(bench) -> None:  # type: ignore[no-untyped-def]
    run = bench.connect("--time", "1")
    port, _ = url_parts(run.wait_url())
    job_id = next(s for s in bench.sessions() if s["local_port"] == port)["job_id"]
    rc = run.finish(timeout=180)
    assert "reaches its time limit in" in run.stderr_text, run.stderr_text
    assert rc != 0 and f"job {job_id} reached its time limit" in run.stderr_text, \
        run.stderr_text
    assert_nothing_left(bench, job_id, port)


@pytest.mark.parametrize("launch", ["ssh", "srun"])
def test_connect_killed_hard_leaves_no_payload_nor_job(bench, launch: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL gives connect no chance to clean up: the node does it, once the grace
    period (`--linger`) for a lost connection has passed. (With srun, the login node
    does it: it ends srun, which ends the step.)"""
    run = bench.connect("--linger", "8s", config=_srun_config(bench, tmp_path)
                        if launch == "srun" else None)
    port, _ = url_parts(run.wait_url())
    record = next(s for s in bench.sessions() if s["local_port"] == port)
    job_id = record["job_id"]
    assert record["launch"] == launch
    (server,) = bench.payloads(job_id)
    (folder,) = (bench.cluster.home() / ".fireflyhpc" / "run").glob(f"{job_id}-*")
    children = psutil.Process(run.proc.pid).children(recursive=True)
    assert children, "connect runs the tunnel's ssh processes"
    run.stop(signal.SIGKILL)
    try:
        assert wait_for(lambda: port_free(port), 15)
        # The node noticed the lost connection and keeps the server for the grace period.
        assert wait_for(lambda: (folder / "kept").exists(), 15)
        assert (folder / "kept").read_text() == "lingering\n"
        assert server.is_running() and bench.squeue().get(job_id) == "RUNNING"
        # Then it ends the server and cancels the job connect submitted.
        assert_nothing_left(bench, job_id, port, timeout=30)  # `status` drops the entry too
        # The tunnel's ssh masters notice their parent is gone (their guard's pipe).
        assert wait_for(lambda: not [c for c in children if _alive(c)], 15), \
            [c.pid for c in children if _alive(c)]
    finally:
        for child in children:
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_python_api_session_context_manager(bench, cleanup_jobs, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import fireflyhpc

    monkeypatch.setenv("XDG_STATE_HOME", str(bench.state_home))
    job_id = bench.sbatch()
    cleanup_jobs.append(job_id)
    node = bench.wait_running(job_id)
    with fireflyhpc.connect(cluster="mini", job=job_id, config=str(bench.config),
                            ssh_config=str(bench.cluster.ssh_config)) as session:
        assert (session.job_id, session.node) == (job_id, node)
        port, token = url_parts(session.url)
        assert http_get(port, "/datasets.json", token)[0] == 200
        frame = session.iframe(height=500)._repr_html_()  # a ticket, never the token
        assert f'src="http://127.0.0.1:{port}/?ticket=' in frame and token not in frame
        assert _session(bench, job_id)["local_port"] == port
    assert_nothing_left(bench, job_id, port, job_gone=False)
    assert bench.squeue().get(job_id) == "RUNNING"


def _srun_config(bench, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    """The bench profile with launch = "srun"."""
    config = tmp_path / "fireflyhpc-srun.toml"
    lines = [ln for ln in bench.config.read_text().splitlines() if not ln.startswith("launch")]
    config.write_text("\n".join([*lines, 'launch = "srun"', ""]))
    return config


def test_connect_with_srun_launch(bench, cleanup_jobs, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """launch = "srun": the payload is a step of the job (no SSH to the node), reached
    through the tunnel's direct hop; Ctrl-C ends the step. Detached, `stop ID` ends it."""
    config = _srun_config(bench, tmp_path)
    job_id = bench.sbatch()
    cleanup_jobs.append(job_id)
    node = bench.wait_running(job_id)
    run = bench.connect("--job", job_id, config=config)
    port, token = url_parts(run.wait_url())
    status, body = http_get(port, "/datasets.json", token)
    assert status == 200 and json.loads(body)
    steps = bench.cluster.ssh("login1", ["squeue", "-h", "-s", "-j", job_id, "-o", "%i %j"]).stdout
    assert "fireflyhpc-payload" in steps
    (proc,) = bench.payloads(job_id)
    assert "0.0.0.0" in proc.cmdline() and token not in " ".join(proc.cmdline())
    assert _session(bench, job_id)["node"] == node
    assert run.stop(signal.SIGINT) == 0, run.stderr_text
    assert_nothing_left(bench, job_id, port, job_gone=False)
    assert "fireflyhpc-payload" not in bench.cluster.ssh(
        "login1", ["squeue", "-h", "-s", "-j", job_id, "-o", "%i %j"]).stdout
    assert not list((bench.cluster.home() / ".fireflyhpc" / "run").glob(f"{job_id}-*"))
    # Detached, the step is kept (its srun held on login1); `stop ID` ends it from there.
    done = bench.run("connect", "--cluster", "mini", "--no-browser", "--job", job_id,
                     "--detach", config=config, timeout=180)
    assert done.returncode == 0, done.stderr
    detached = _session(bench, job_id)
    assert detached["detached"] and detached["launch"] == "srun"
    assert len(bench.payloads(job_id)) == 1
    assert psutil.Process(detached["remote_pgid"]).name() == "srun"
    out = bench.run("stop", detached["id"], config=config)
    assert out.returncode == 0 and "server on" in out.stdout and "stopped" in out.stdout, \
        out.stdout + out.stderr
    assert_nothing_left(bench, job_id, None, job_gone=False)
    assert not list((bench.cluster.home() / ".fireflyhpc" / "run").glob(f"{job_id}-*"))
    assert wait_for(lambda: "fireflyhpc-payload" not in bench.cluster.ssh(
        "login1", ["squeue", "-h", "-s", "-j", job_id, "-o", "%i %j"]).stdout, 15)
    assert bench.squeue().get(job_id) == "RUNNING"


def test_connect_with_a_custom_payload_command(bench, cleanup_jobs) -> None:  # type: ignore[no-untyped-def]
    """--payload "COMMAND {port}": any web server; its whole process group ends on Ctrl-C."""
    job_id = bench.sbatch()
    cleanup_jobs.append(job_id)
    node = bench.wait_running(job_id)
    run = bench.connect("--job", job_id, "--payload",
                        "python3 -m http.server {port} --bind 127.0.0.1 --directory /etc")
    url = run.wait_url()
    assert "token" not in url  # fireflyhpc cannot make it check one
    port = int(url.split(":")[2].strip("/"))
    status, body = http_get(port, "/hostname", None)
    assert status == 200 and body == Path("/etc/hostname").read_bytes()
    assert "cannot be made to check fireflyhpc's token" in run.stderr_text
    remote_port = _session(bench, job_id)["remote_port"]

    def servers() -> list[int]:
        return [p.pid for p in psutil.process_iter(["cmdline"])
                if f"http.server {remote_port} " in " ".join(p.info["cmdline"] or [])]

    node_net = os.stat(f"/run/netns/{bench.cluster.netns(node)}").st_ino
    assert servers() and all(os.readlink(f"/proc/{pid}/ns/net") == f"net:[{node_net}]"
                             for pid in servers())
    assert run.stop(signal.SIGINT) == 0, run.stderr_text
    assert wait_for(lambda: not servers(), 15)
    assert_nothing_left(bench, job_id, port, job_gone=False)


def test_stop_leaves_a_python_api_session_to_its_owner(bench, cleanup_jobs, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """`stop` must not SIGTERM a Python (Jupyter) process that opened a session."""
    import fireflyhpc

    monkeypatch.setenv("XDG_STATE_HOME", str(bench.state_home))
    job_id = bench.sbatch()
    cleanup_jobs.append(job_id)
    bench.wait_running(job_id)
    with fireflyhpc.connect(cluster="mini", job=job_id, config=str(bench.config),
                            ssh_config=str(bench.cluster.ssh_config)) as session:
        out = bench.run("stop", session.id)
        assert out.returncode != 0 and "call .close() on it there" in one_error_line(out.stderr)
        port, token = url_parts(session.url)
        assert http_get(port, "/", token)[0] == 200  # still serving: we are alive
    assert_nothing_left(bench, job_id, port, job_gone=False)


@pytest.mark.parametrize("form", ["{user}@login1", "login1:22", "{user}@login1:22"])
def test_connect_takes_every_login_form(bench, cleanup_jobs, tmp_path, form: str) -> None:  # type: ignore[no-untyped-def]
    """login = "user@host", "host:port" or "user@host:port" (an ssh_config alias as host):
    connect resolves it like ssh would, and the session works."""
    login = form.format(user=bench.cluster.user)
    lines = bench.config.read_text().splitlines()
    assert any(line.startswith("login = ") for line in lines)
    config = tmp_path / "fireflyhpc.toml"
    config.write_text("\n".join(f'login = "{login}"' if line.startswith("login = ") else line
                                for line in lines) + "\n")
    job_id = bench.sbatch()
    cleanup_jobs.append(job_id)
    bench.wait_running(job_id)
    run = bench.connect("--job", job_id, config=config)
    port, token = url_parts(run.wait_url())
    assert http_get(port, "/datasets.json", token)[0] == 200
    assert _session(bench, job_id)["login"] == login
    assert run.stop(signal.SIGINT) == 0, run.stderr_text
    assert_nothing_left(bench, job_id, port, job_gone=False)
