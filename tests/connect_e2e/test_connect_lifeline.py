"""The lifeline protocol, run for real in a local /bin/sh against a real `fireflyhpc serve`:
what the node does when its session stops, detaches, or is lost, and how a session
re-attaches within the grace period. (squeue and scancel are stand-ins here, see
SLURM_STAND_INS; on the mini cluster the same scripts meet the real Slurm, see
test_connect_faults.py.)"""

from __future__ import annotations

import stat
import sys
from pathlib import Path
from typing import Iterator

import psutil
import pytest

from connect_e2e_helpers import LocalRunner, wait_for
from fireflyhpc.errors import ServerError
from fireflyhpc.session import kept, launch, lifeline
from fireflyhpc.session.launch import RemoteServer

TOKEN = "tok-" + "x" * 40
JOB = "4242"


@pytest.fixture
def runner(tmp_path: Path) -> LocalRunner:
    return LocalRunner(tmp_path, slurm=True)


@pytest.fixture
def server(runner: LocalRunner) -> Iterator[RemoteServer]:
    """A payload started as connect starts one (a plain web server: it starts in a
    fraction of the time `fireflyhpc serve` takes), with the ready file that serve
    would have written, so that it can be found again."""
    spec = launch.PayloadSpec(kind="command", python=sys.executable,
                              command=f"exec {sys.executable} -m http.server {{port}} "
                                      "--bind 127.0.0.1")
    started = launch.start_payload(runner, spec, node="local", name=f"{JOB}-0123abcd",
                                   token=TOKEN)
    (runner.home / started.run_dir / "ready.json").write_text(
        f'{{"port": {started.port}, "pid": {started.pgid}}}\n')
    yield started
    launch.stop_payload(runner, started)


def alive(server: RemoteServer) -> bool:
    try:
        return psutil.Process(server.pgid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def hold(runner: LocalRunner, server: RemoteServer, *, linger: int = 2,
         cancel: bool = True) -> lifeline.Lifeline:
    held = lifeline.Lifeline(runner, server, token=TOKEN, linger=linger, job_id=JOB,
                             cancel_job=cancel)
    held.confirm(timeout=20)
    return held


def find_kept(runner: LocalRunner) -> kept.KeptServer | None:
    """What the look for a kept server of JOB (the start script runs it first when
    attaching) finds on this host."""
    result = runner.run(["sh", "-c", kept.FIND_SCRIPT, "sh", JOB])
    return kept.parse_find_output(result.stdout, "local")


def files(runner: LocalRunner, server: RemoteServer) -> set[str]:
    folder = runner.home / server.run_dir
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


def cancelled(runner: LocalRunner) -> list[str]:
    path = runner.home / "scancelled"
    return path.read_text().split() if path.exists() else []


def test_argv_carries_no_token_and_counts_the_squeue_words() -> None:
    server = RemoteServer(node="n1", pgid=77, port=8123, run_name=f"{JOB}-0123abcd")
    argv = lifeline.lifeline_argv(server, linger=600, generation="ab12", job_id=JOB,
                                  cancel_job=True)
    assert argv[:2] == ["sh", "-c"] and argv[4] == lifeline.guard_script()
    assert argv[5:11] == ["77", server.run_dir, "600", "ab12", "6", "squeue"]
    assert argv[10:] == ["squeue", "-h", "-o", "%T", "-j", JOB, "scancel", JOB]
    own = lifeline.lifeline_argv(server, linger=0, generation="ab12", job_id=JOB,
                                 cancel_job=False)
    assert own[-6:] == ["squeue", "-h", "-o", "%T", "-j", JOB] and "scancel" not in own
    with pytest.raises(ValueError):
        lifeline.lifeline_argv(server, linger=-1, generation="ab12", job_id=JOB,
                               cancel_job=False)
    with pytest.raises(ValueError):
        lifeline.lifeline_argv(server, linger=1, generation="a b", job_id=JOB,
                               cancel_job=False)


def test_lost_connection_keeps_the_server_for_linger_then_ends_it_and_the_job(
        runner: LocalRunner, server: RemoteServer) -> None:
    held = hold(runner, server, linger=3)
    assert "token" not in files(runner, server)  # held: the token is on no disk
    held.drop()  # the connection goes away without a word
    folder = runner.home / server.run_dir
    assert wait_for(lambda: (folder / "token").exists(), 10)
    assert stat.S_IMODE((folder / "token").stat().st_mode) == 0o600
    assert (folder / "token").read_text() == TOKEN + "\n"
    assert (folder / "kept").read_text() == "lingering\n" and (folder / "cancels").exists()
    assert alive(server)
    assert wait_for(lambda: not alive(server), 20)
    assert wait_for(lambda: not folder.exists() and cancelled(runner) == [JOB], 10)


def test_a_new_lifeline_within_linger_takes_the_server_back(
        runner: LocalRunner, server: RemoteServer) -> None:
    first = hold(runner, server, linger=3)
    first.drop()
    folder = runner.home / server.run_dir
    assert wait_for(lambda: (folder / "token").exists(), 10)
    found = find_kept(runner)
    assert found is not None and found.server == server and found.token == TOKEN
    assert not found.detached and found.cancels_job and TOKEN not in repr(found)
    second = hold(runner, server, linger=3)
    assert not {"token", "kept", "cancels"} & files(runner, server)
    # The first guard's time passes: it sees a newer lifeline and leaves the server be.
    guard = [p for p in psutil.process_iter(["cmdline"])
             if first.generation in " ".join(p.info["cmdline"] or [])]
    assert guard and wait_for(lambda: not any(p.is_running() and p.status() != "zombie"
                                              for p in guard), 15)
    assert alive(server) and cancelled(runner) == []
    assert second.release(detach=False)  # "stop": at once, job too
    assert not alive(server) and not folder.exists() and cancelled(runner) == [JOB]


def test_only_the_newest_lifeline_keeps_the_server(runner: LocalRunner,
                                                   server: RemoteServer) -> None:
    older = hold(runner, server, linger=2)
    newer = hold(runner, server, linger=2)
    older.drop()  # a connection that died late, after its session had re-attached
    assert older._held.wait(10) == 0
    assert "token" not in files(runner, server)
    newer.drop()
    folder = runner.home / server.run_dir
    assert wait_for(lambda: (folder / "token").exists(), 10)
    assert wait_for(lambda: not alive(server), 20)


def test_linger_zero_ends_at_once_and_attached_jobs_are_never_cancelled(
        runner: LocalRunner, server: RemoteServer) -> None:
    held = hold(runner, server, linger=0, cancel=False)
    held.drop()
    assert wait_for(lambda: not alive(server), 10)
    assert not (runner.home / server.run_dir).exists() and cancelled(runner) == []
    with pytest.raises(ServerError, match="has ended"):
        hold(runner, server)


def test_detach_keeps_the_server_until_the_job_ends(runner: LocalRunner,
                                                    server: RemoteServer) -> None:
    argv = lifeline.lifeline_argv(server, linger=1, generation="d1", job_id=JOB,
                                  cancel_job=True, poll=1)
    held = runner.start(argv)
    held.write((TOKEN + "\n").encode())
    assert held.readline(20) == b"attached\n"
    held.write(b"detach\n")
    held.close_stdin()
    assert held.wait(20) == 0
    folder = runner.home / server.run_dir
    assert (folder / "kept").read_text() == "detached\n" and (folder / "token").exists()
    found = find_kept(runner)
    assert found is not None and found.detached and found.cancels_job
    # Detached means: no grace period; the server runs until its job ends.
    assert not wait_for(lambda: not alive(server), 4)
    (runner.home / "job-state").write_text("COMPLETED\n")
    assert wait_for(lambda: not alive(server), 15)
    assert wait_for(lambda: not folder.exists(), 10)
    assert cancelled(runner) == []  # the job was over: nothing to cancel
    held.close()


def test_the_look_for_kept_servers_skips_held_ones_and_drops_stale_ones(runner: LocalRunner,
                                                           server: RemoteServer) -> None:
    held = hold(runner, server, linger=600)
    assert find_kept(runner) is None  # held by a live session
    held.drop()
    folder = runner.home / server.run_dir
    assert wait_for(lambda: (folder / "token").exists(), 10)
    psutil.Process(server.pgid).kill()  # the server died on its own
    assert wait_for(lambda: not launch.payload_alive(runner, server), 20)
    assert find_kept(runner) is None
    assert not folder.exists()  # and its token went with its folder


def test_the_look_for_kept_servers_leaves_those_held_on_another_host_alone(runner: LocalRunner,
                                                              server: RemoteServer) -> None:
    """The run folders of the shared home hold servers of two kinds of host: nodes
    (SSH launch) and the login node (srun steps). A find on one host never judges,
    nor removes, a folder whose process group lives on another."""
    held = hold(runner, server, linger=600)
    held.drop()
    folder = runner.home / server.run_dir
    assert wait_for(lambda: (folder / "token").exists(), 10)
    here = (folder / "host").read_text()
    (folder / "host").write_text("login-elsewhere\n")
    assert find_kept(runner) is None
    assert (folder / "token").exists() and alive(server)
    (folder / "host").write_text(here)
    found = find_kept(runner)
    assert found is not None and found.server == server and found.token == TOKEN


def test_parse_find_output_skips_malformed_lines() -> None:
    good = f'{JOB}-0123abcd 77 lingering 1 {TOKEN} {{"port": 8123, "pid": 77}}'
    bad = ["garbage", f"{JOB}-0123abcd x lingering 1 {TOKEN} {{}}",
           f'../../etc-0123abcd 77 detached 0 {TOKEN} {{"port": 1}}',
           f'{JOB}-0123abcd 77 forever 0 {TOKEN} {{"port": 1}}',
           f'{JOB}-0123abcd 77 detached 0 {TOKEN} not-json',
           f'{JOB}-0123abcd 77 detached 0 to$ken {{"port": 1}}']
    found = kept.parse_find_output("\n".join([*bad, good]), "n1")
    assert found is not None
    assert found.server == RemoteServer("n1", 77, 8123, f"{JOB}-0123abcd")
    assert not found.detached and found.cancels_job and found.token == TOKEN
    assert TOKEN not in repr(found)
    assert kept.parse_find_output("\n".join(bad), "n1") is None


def test_attaching_takes_a_kept_server_back_in_the_same_command_that_would_start_one(
        runner: LocalRunner, server: RemoteServer) -> None:
    """start_or_reuse: with a kept server of the job on the host, that one comes back
    (with its token) and nothing starts; with none, the payload starts."""
    spec = launch.PayloadSpec(kind="command", python=sys.executable,
                              command=f"exec {sys.executable} -m http.server {{port}} "
                                      "--bind 127.0.0.1")
    run_root = runner.home / launch.RUN_ROOT
    held = hold(runner, server, linger=600)
    held.drop()
    assert wait_for(lambda: (runner.home / server.run_dir / "token").exists(), 10)
    before = sorted(p.name for p in run_root.iterdir())
    found = kept.start_or_reuse(runner, spec, job_id=JOB, node="local",
                                name=f"{JOB}-4567cdef", token="other-token")
    assert isinstance(found, kept.KeptServer)
    assert found.server == server and found.token == TOKEN and not found.detached
    assert sorted(p.name for p in run_root.iterdir()) == before  # nothing started
    started = kept.start_or_reuse(runner, spec, job_id="99", node="local",
                                  name="99-4567cdef", token="other-token")
    try:
        assert isinstance(started, RemoteServer) and started.pgid != server.pgid
        assert alive(started) and (run_root / "99-4567cdef" / "pgid").exists()
    finally:
        launch.stop_payload(runner, started)  # type: ignore[arg-type]

def test_an_unreadable_kept_server_is_one_error_without_its_token(
        runner: LocalRunner, server: RemoteServer) -> None:
    """A kept server's line that does not parse (here a token with a character no token
    of ours has) stops attaching with one ServerError, and starts nothing."""
    spec = launch.PayloadSpec(kind="command", python=sys.executable,
                              command=f"exec {sys.executable} -m http.server {{port}}")
    held = hold(runner, server, linger=600)
    held.drop()
    token_file = runner.home / server.run_dir / "token"
    assert wait_for(token_file.exists, 10)
    token_file.write_text("to$ken-secret\n")
    before = sorted(p.name for p in (runner.home / launch.RUN_ROOT).iterdir())
    with pytest.raises(ServerError, match="unreadable answer about a server kept on local") \
            as raised:
        kept.start_or_reuse(runner, spec, job_id=JOB, node="local", name=f"{JOB}-4567cdef",
                            token="other-token")
    assert "secret" not in str(raised.value)
    assert sorted(p.name for p in (runner.home / launch.RUN_ROOT).iterdir()) == before
