"""Pure pieces of connect: the launch argv and script, the waiting line, end messages.

The launch script is also run for real, in a local /bin/sh, against a real
`fireflyhpc serve` (token on stdin, port read back, whole group stopped).
"""

from __future__ import annotations

import os
import shlex
import sys
from datetime import datetime
from pathlib import Path

import psutil
import pytest

from fireflyhpc.session import jobs, launch, srun
from fireflyhpc.errors import ConfigError, ServerError
from fireflyhpc.scheduler import JobInfo, JobState, StartEstimate

from connect_e2e_helpers import LocalRunner, wait_for


def test_payload_argv_auto_demo_and_data() -> None:
    spec = launch.PayloadSpec(python="/opt/py/bin/python")  # auto: the server decides
    assert launch.payload_argv(spec, ".fireflyhpc/run/1-abcdef01/ready.json") == [
        "/opt/py/bin/python", "-m", "fireflyhpc", "serve", "--demo", "--port", "0", "--host",
        "127.0.0.1", "--no-browser", "--ready-file", ".fireflyhpc/run/1-abcdef01/ready.json",
        "--app", "auto"]
    assert launch.payload_argv(launch.PayloadSpec.from_setting("builtin"), "r")[-1] == "builtin"
    spec = launch.PayloadSpec(kind="firefly", data_dirs=("sims/a b", "x"))
    argv = launch.payload_argv(spec, "r.json")
    assert argv[4:6] == ["sims/a b", "x"] and "--demo" not in argv
    assert argv[-2:] == ["--app", "firefly"]


def test_token_never_in_the_launch_argv() -> None:
    spec = launch.PayloadSpec.from_setting("builtin", python="python3", setup=("module load x",))
    argv = launch.start_argv(spec, launch.run_name("12", "0123abcd"))
    joined = shlex.join(argv)
    assert "FIREFLYHPC_TOKEN=" not in joined and "--token" not in joined
    assert "module load x" in argv[4]  # setup lines are part of the constant script


def test_srun_step_argv_carries_no_token_and_binds_the_node() -> None:
    spec = launch.PayloadSpec.from_setting("builtin", python="python3", setup=("module load x",))
    name = launch.run_name("12", "0123abcd")
    argv = srun.start_step_argv(spec, job_id="12", node="node1", name=name)
    joined = shlex.join(argv)
    assert "FIREFLYHPC_TOKEN=" not in joined and "--token" not in joined
    assert argv[:2] == ["sh", "-c"] and argv[3:6] == ["sh", f".fireflyhpc/run/{name}", "step"]
    srun_words = argv[6:argv.index("sh", 6)]
    assert srun_words[:2] == ["srun", "--jobid=12"] and "--nodelist=node1" in srun_words
    task = argv[6 + len(srun_words):]
    assert "module load x" in task[2] and "module load x" not in argv[2]  # setup: on the node
    assert task[task.index("--host") + 1] == "0.0.0.0"  # the login node connects to it
    with pytest.raises(ConfigError, match="builtin or firefly"):
        srun.start_step_argv(launch.PayloadSpec.from_setting("python3 -m http.server {port}"),
                             job_id="12", node="node1", name=name)


def test_a_step_reads_its_token_file_and_removes_it_before_the_server_starts(
        tmp_path: Path) -> None:
    """The start script's "step" kind and the step's task, run here in a real sh against
    a real `fireflyhpc serve`, without the srun between them (srun needs the cluster;
    test_connect_e2e.py and test_connect_faults.py run it there)."""
    runner = LocalRunner(tmp_path)
    spec = launch.PayloadSpec(python=sys.executable)
    run_dir = f"{launch.RUN_ROOT}/1-0123abcd"
    token = "t0k3n-" + "y" * 30
    argv = ["sh", "-c", launch.start_script(()), "sh", run_dir, "step",
            *srun.task_argv(spec, run_dir, poll=1)]
    server = launch.start_payload(runner, spec, node="local", name="1-0123abcd",
                                  token=token, argv=argv)
    try:
        folder = tmp_path / run_dir
        assert not (folder / "token").exists()  # read by the task, then removed
        assert (folder / "host").read_text().strip() == os.uname().nodename
        assert (folder / "pgid").read_text().strip() == str(server.pgid)
        assert os.getpgid(server.pgid) == server.pgid
        procs = [psutil.Process(server.pgid), *psutil.Process(server.pgid).children(True)]
        assert all(token not in " ".join(p.cmdline()) for p in procs)
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", "/datasets.json", headers={"Authorization": f"Bearer {token}"})
        assert conn.getresponse().status == 200
        conn.close()
        # srun SIGKILLed leaves the step; whatever killed it removes the run folder:
        # the task's watcher then ends the server.
        server_pid = next(p.pid for p in procs if "serve" in p.cmdline())
        import shutil
        shutil.rmtree(folder)
        assert wait_for(lambda: not psutil.pid_exists(server_pid)
                        or psutil.Process(server_pid).status() == psutil.STATUS_ZOMBIE, 20)
    finally:
        launch.stop_payload(runner, server)
    assert not (tmp_path / run_dir).exists()


def test_run_name_is_validated() -> None:
    assert launch.run_name("7_3", "deadbeef") == "7_3-deadbeef"
    for job in ("1;rm -rf ~", "../x", ""):
        with pytest.raises(ConfigError):
            launch.run_name(job, "deadbeef")


def test_parse_start_output_multiline_ready_json() -> None:
    out = 'pid 4242\n{\n  "version": 1,\n  "pid": 4242,\n  "port": 39001\n}\n'
    server = launch.parse_start_output(out, "node1", "1-deadbeef")
    assert (server.pgid, server.port, server.run_dir) == (4242, 39001,
                                                          ".fireflyhpc/run/1-deadbeef")
    assert server.app == ""  # an older server does not say which app it chose
    out = 'pid 7\n{"version": 1, "pid": 7, "port": 39002, "app": "firefly"}\n'
    assert launch.parse_start_output(out, "node1", "1-deadbeef").app == "firefly"
    assert "Firefly's own app" in launch.auto_choice("firefly", "/v/bin/python")
    assert "--with-firefly" in launch.auto_choice("builtin", "/v/bin/python")
    assert launch.parse_start_output("pid 5\nport 8123\n", "n", "1-deadbeef").port == 8123
    with pytest.raises(ServerError):
        launch.parse_start_output("pid 5\n", "n", "1-deadbeef")


def test_status_text_and_hopeless_reasons() -> None:
    job = JobInfo(job_id="9", state=JobState.PENDING, reason="Resources")
    est = StartEstimate(job_id="9", start_time=datetime(2030, 1, 1, 12, 0, 5), nodes=(),
                        reason="Resources")
    text = jobs.status_text("9", job, est, 65, now=datetime(2030, 1, 1, 11, 0))
    assert text == "job 9, PENDING, reason: Resources, expected start: 12:00:05, waited 1:05"
    assert jobs.hopeless_reason(job) is None
    bad = JobInfo(job_id="9", state=JobState.PENDING, reason="PartitionTimeLimit")
    assert jobs.hopeless_reason(bad) == "PartitionTimeLimit"


def test_end_messages_and_warning_time() -> None:
    assert "time limit" in jobs.end_message("3", None, 5.0)
    assert "cancelled" in jobs.end_message("3", None, 600.0)
    assert "time limit" in jobs.end_message(
        "3", JobInfo(job_id="3", state=JobState.TIMEOUT), None)
    assert jobs.warn_before(3600) == 300 and jobs.warn_before(60) == 15
    assert jobs.clock_text(3725) == "1:02:05" and jobs.clock_text(None) == "-"


def test_node_names_with_shell_characters_are_refused() -> None:
    for node in ("node1;id", "$(id)", "-oProxyCommand=x", "a b", "node1\n"):
        with pytest.raises(ConfigError):
            jobs.check_node(node)


def test_launch_script_runs_a_real_server_and_stops_its_group(tmp_path: Path) -> None:
    runner = LocalRunner(tmp_path)
    spec = launch.PayloadSpec(python=sys.executable)
    token = "t0k3n-" + "x" * 30
    server = launch.start_payload(runner, spec, node="local", name="1-0123abcd", token=token)
    try:
        proc = psutil.Process(server.pgid)
        assert os.getpgid(server.pgid) == server.pgid  # its own process group
        assert token not in " ".join(proc.cmdline())
        assert launch.payload_alive(runner, server)
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", "/", headers={"Authorization": f"Bearer {token}"})
        assert conn.getresponse().status == 200
        conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", "/datasets.json")
        assert conn.getresponse().status == 403
        conn.close()
        # find_kept looks for kept servers on the host that holds them only
        assert (tmp_path / server.run_dir / "host").read_text() == os.uname().nodename + "\n"
    finally:
        launch.stop_payload(runner, server)
    assert not psutil.pid_exists(server.pgid) or psutil.Process(server.pgid).status() == "zombie"
    assert not (tmp_path / server.run_dir).exists()


@pytest.mark.parametrize("kind", ["builtin", "command"])
def test_launch_honours_the_port_range(tmp_path: Path, kind: str) -> None:
    """The profile's port_range: the server (builtin, or a user command's {port}) listens
    on a free port inside it; the first of the two is taken here."""
    import socket

    for low in range(23000 + os.getpid() % 9000, 64000, 2):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", low + 1))
                break
            except OSError:
                continue
    command = f"{shlex.quote(sys.executable)} -m http.server {{port}} --bind 127.0.0.1"
    spec = launch.PayloadSpec.from_setting("builtin" if kind == "builtin" else command,
                                           python=sys.executable, ports=(low, low + 1))
    if kind == "builtin":
        argv = launch.payload_argv(spec, "r.json")
        assert argv[argv.index("--port") + 1] == f"{low}-{low + 1}"
    runner = LocalRunner(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", low))
        busy.listen(1)
        server = launch.start_payload(runner, spec, node="local", name="3-0123abcd",
                                      token="t" * 40)
    try:
        assert server.port == low + 1
    finally:
        launch.stop_payload(runner, server)


def test_launch_script_reports_an_early_death(tmp_path: Path) -> None:
    spec = launch.PayloadSpec(python="/bin/false")
    with pytest.raises(ServerError, match="exited at once"):
        launch.start_payload(LocalRunner(tmp_path), spec, node="local", name="1-0123abcd",
                             token="abc", timeout=10)


def test_status_line_rewrites_in_place_on_a_terminal_only() -> None:
    import io

    from fireflyhpc.cli.connect_cmd import StatusLine

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    line = StatusLine(tty)
    line("job 1, PENDING, waited 0:01")
    line("job 1, RUNNING")
    line.say("done")
    assert tty.getvalue() == ("\rjob 1, PENDING, waited 0:01\rjob 1, RUNNING" + " " * 13
                              + "\nfireflyhpc: done\n")
    plain = io.StringIO()
    line = StatusLine(plain)
    line("job 1, PENDING")
    line("job 1, RUNNING")
    assert plain.getvalue() == "fireflyhpc: job 1, PENDING\nfireflyhpc: job 1, RUNNING\n"


def test_setup_lines_run_before_the_server_and_may_change_directory(tmp_path: Path) -> None:
    runner = LocalRunner(tmp_path)
    spec = launch.PayloadSpec(python=sys.executable, setup=(
        "touch setup-ran", "export FFHPC_SETUP_MARK=yes", "cd /"))
    server = launch.start_payload(runner, spec, node="local", name="2-0123abcd", token="t" * 40)
    try:
        assert (tmp_path / "setup-ran").exists()
        env = psutil.Process(server.pgid).environ()
        assert env.get("FFHPC_SETUP_MARK") == "yes" and env.get("FIREFLYHPC_TOKEN") == "t" * 40
    finally:
        launch.stop_payload(runner, server)
    assert not (tmp_path / server.run_dir).exists()


def test_a_detached_session_is_dead_once_its_time_limit_passed() -> None:
    import time

    from fireflyhpc.session.records import Liveness, SessionRecord, liveness

    record = SessionRecord.for_this_process(
        cluster="c", job_id="5", node="n1", local_port=None, remote_port=8000, url=None,
        submitted_by_us=True, detached=True, time_limit_end=time.time() + 600)
    assert liveness(record) is Liveness.UNKNOWN
    from dataclasses import replace
    assert liveness(replace(record, time_limit_end=time.time() - 1)) is Liveness.DEAD
    assert liveness(replace(record, time_limit_end=None)) is Liveness.UNKNOWN


def test_the_start_script_waits_with_a_sleep_that_takes_whole_seconds_only(
        tmp_path: Path) -> None:
    """POSIX sleep need not take fractions: with one that refuses them (a stand-in first
    on PATH), the start script still waits for a server that takes 2 s to be ready,
    instead of running through its ticks at once."""
    (tmp_path / "home").mkdir()
    runner = LocalRunner(tmp_path / "home")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sleep").write_text('#!/bin/sh\ncase "$1" in *.*) exit 1;; esac\n'
                                   'exec /bin/sleep "$@"\n')
    (bin_dir / "sleep").chmod(0o755)
    runner.env["PATH"] = f"{bin_dir}:{runner.env['PATH']}"
    run_dir = f"{launch.RUN_ROOT}/1-0123abcd"
    slow = (f'/bin/sleep 2; echo \'{{"port": 1234, "pid": 1}}\' > {run_dir}/ready.json; '
            "exec /bin/sleep 30")
    argv = ["sh", "-c", launch.start_script((), timeout=8), "sh", run_dir, "server",
            "sh", "-c", slow]
    server = launch.start_payload(runner, launch.PayloadSpec(python=sys.executable),
                                  node="local", name="1-0123abcd", token="t", argv=argv)
    try:
        assert server.port == 1234
    finally:
        launch.stop_payload(runner, server)
