"""Session records on disk: atomic versioned JSON, permissions, stale detection, status."""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import psutil
import pytest
from connect_testutil import one_error_line, run_cli

from fireflyhpc.errors import ConfigError, ExitStatus, LocalError
from fireflyhpc.procutil import start_stamp
from fireflyhpc.session.records import (FORMAT_VERSION, Liveness, SessionRecord, SessionStore,
                                 check_id, liveness, new_id)


def record_for(proc: psutil.Process, **values) -> SessionRecord:  # type: ignore[no-untyped-def]
    base = dict(id=new_id(), cluster="mini", job_id="12", node="node1", local_port=8123,
                remote_port=8555, url="http://localhost:8123/?token=secret", pid=proc.pid,
                pid_create_time=start_stamp(proc), hostname=socket.gethostname(),
                submitted_by_us=True, time_limit_end=time.time() + 3600)
    base.update(values)
    return SessionRecord(**base)


@pytest.fixture
def sleeper():  # type: ignore[no-untyped-def]
    proc = subprocess.Popen(["sleep", "300"])
    yield psutil.Process(proc.pid)
    proc.kill()
    proc.wait()


def test_round_trip_with_permissions_and_format(tmp_path: Path, sleeper) -> None:  # type: ignore[no-untyped-def]
    store = SessionStore(tmp_path / "state" / "sessions")
    record = store.add(record_for(sleeper))
    assert store.get(record.id) == record and store.list() == [record]
    folder, path = store.directory, store.path(record.id)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = json.loads(path.read_text())
    assert data["version"] == FORMAT_VERSION and data["session"]["job_id"] == "12"
    assert sorted(p.name for p in folder.iterdir()) == [f"{record.id}.json"]  # no temp left
    assert store.remove(record.id) and not store.remove(record.id)
    assert store.list() == [] and store.get(record.id) is None


def test_loose_folder_mode_is_tightened(tmp_path: Path, sleeper) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "sessions"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    SessionStore(folder).add(record_for(sleeper))
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_folder_of_another_user_is_refused(tmp_path: Path, sleeper) -> None:  # type: ignore[no-untyped-def]
    if os.geteuid() != 0:
        pytest.skip("needs root to give the folder to another user")
    folder = tmp_path / "sessions"
    folder.mkdir(mode=0o700)
    os.chown(folder, 65534, 65534)
    with pytest.raises(LocalError, match="belongs to another user"):
        SessionStore(folder).add(record_for(sleeper))


def test_liveness_by_pid_create_time_and_host(sleeper) -> None:  # type: ignore[no-untyped-def]
    alive = record_for(sleeper)
    assert liveness(alive) is Liveness.ALIVE
    assert liveness(replace(alive, pid_create_time=alive.pid_create_time - 5)) is Liveness.DEAD
    assert liveness(replace(alive, hostname="elsewhere")) is Liveness.UNKNOWN
    assert liveness(replace(alive, detached=True)) is Liveness.UNKNOWN
    finished = subprocess.Popen(["true"])
    created = start_stamp(psutil.Process(finished.pid))
    finished.wait()
    assert liveness(replace(alive, pid=finished.pid, pid_create_time=created)) is Liveness.DEAD


def test_for_this_process() -> None:
    record = SessionRecord.for_this_process(cluster="c", job_id=None, node=None, local_port=None,
                                            remote_port=None, url=None, submitted_by_us=False)
    assert record.pid == os.getpid() and liveness(record) is Liveness.ALIVE
    assert len(record.id) == 8


def test_prune_drops_only_dead_entries(tmp_path: Path, sleeper) -> None:  # type: ignore[no-untyped-def]
    store = SessionStore(tmp_path)
    alive = store.add(record_for(sleeper))
    dead = store.add(record_for(sleeper, pid_create_time=1.0))
    foreign = store.add(record_for(sleeper, hostname="other-laptop", pid=1))
    assert [r.id for r in store.prune()] == [dead.id]
    assert {r.id for r in store.list()} == {alive.id, foreign.id}


def test_unreadable_and_future_files_are_skipped(tmp_path: Path, sleeper, caplog,  # type: ignore[no-untyped-def]
                                                 monkeypatch) -> None:
    # The CLI (if run in-process earlier) stops "fireflyhpc" logs from reaching the root.
    monkeypatch.setattr(logging.getLogger("fireflyhpc"), "propagate", True)
    caplog.set_level(logging.WARNING, logger="fireflyhpc.session.records")
    store = SessionStore(tmp_path)
    good = store.add(record_for(sleeper))
    (tmp_path / "0000000a.json").write_text("{not json")
    (tmp_path / "0000000b.json").write_text(json.dumps({"version": 99, "session": {}}))
    (tmp_path / "notes.json").write_text("{}")
    assert store.list() == [good]
    assert "ignoring unreadable session file" in caplog.text


@pytest.mark.parametrize("bad", ["../../etc/passwd", "ABCDEF12", "1234567", "", "12345678/"])
def test_ids_are_checked(bad: str) -> None:
    with pytest.raises(ConfigError, match="not a session id"):
        check_id(bad)


WRITER = """
import sys
from pathlib import Path
from fireflyhpc.session.records import SessionRecord, SessionStore
store = SessionStore(Path(sys.argv[1]))
for _ in range(int(sys.argv[2])):
    store.add(SessionRecord.for_this_process(cluster="c", job_id=None, node=None,
                                             local_port=None, remote_port=None, url=None,
                                             submitted_by_us=False))
"""


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), "40"])
               for _ in range(3)]
    for writer in writers:
        assert writer.wait(timeout=120) == 0
    records = SessionStore(tmp_path).list()
    assert len(records) == 120 and len({r.id for r in records}) == 120
    assert len({r.pid for r in records}) == 3


# -- the CLI ---------------------------------------------------------------------------

def test_status_lists_live_sessions_and_drops_dead_ones(clean_env, sleeper) -> None:  # type: ignore[no-untyped-def]
    folder = Path(clean_env["XDG_STATE_HOME"]) / "fireflyhpc" / "sessions"
    store = SessionStore(folder)
    alive = store.add(record_for(sleeper))
    dead = store.add(record_for(sleeper, pid_create_time=2.0, job_id="13"))
    proc = run_cli("status", env=clean_env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == f"dropped stale session {dead.id} (its connect process is gone)\n"
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["ID", "CLUSTER", "JOB", "NODE", "PORTS", "TIME", "LEFT", "STATE",
                                "URL"]
    assert lines[1].split()[:5] == [alive.id, "mini", "12", "node1", "8123->8555"]
    assert lines[1].split()[5] in ("0:59:59", "1:00:00")
    assert lines[1].split()[6:] == ["connected", alive.url]
    assert len(lines) == 2 and not store.path(dead.id).exists()
    as_json = json.loads(run_cli("status", "--json", env=clean_env).stdout)
    assert [s["id"] for s in as_json["sessions"]] == [alive.id]
    assert as_json["sessions"][0]["liveness"] == "alive" and as_json["dropped"] == []
    sleeper.kill()
    sleeper.wait()
    assert run_cli("status", env=clean_env).stdout == "no sessions\n"
    assert store.list() == []


def test_status_says_since_when_a_session_is_reconnecting(clean_env, sleeper) -> None:  # type: ignore[no-untyped-def]
    folder = Path(clean_env["XDG_STATE_HOME"]) / "fireflyhpc" / "sessions"
    store = SessionStore(folder)
    since = time.mktime((2030, 5, 6, 14, 2, 30, 0, 0, -1))
    lost = store.add(record_for(sleeper, reconnecting_since=since))
    kept = store.add(record_for(sleeper, detached=True, job_id="13"))
    lines = run_cli("status", env=clean_env).stdout.splitlines()
    assert f"{lost.id} " in lines[1] and "reconnecting since 14:02 " in lines[1]
    assert f"{kept.id} " in lines[2] and " detached " in lines[2]
    as_json = json.loads(run_cli("status", "--json", env=clean_env).stdout)
    assert as_json["sessions"][0]["reconnecting_since"] == since


def test_take_over_removes_detached_and_dead_records_of_the_job(tmp_path: Path,
                                                                  sleeper) -> None:  # type: ignore[no-untyped-def]
    store = SessionStore(tmp_path)
    alive = store.add(record_for(sleeper, submitted_by_us=True))  # reconnecting, say
    store.add(record_for(sleeper, pid_create_time=2.0, submitted_by_us=True))  # killed
    store.add(record_for(sleeper, detached=True, submitted_by_us=False))
    other = store.add(record_for(sleeper, detached=True, job_id="99"))
    assert store.take_over("12") is True  # the killed session had submitted job 12
    assert {r.id for r in store.list()} == {alive.id, other.id}
    assert store.take_over("12") is False


def test_records_without_the_reconnecting_field_still_read(tmp_path: Path, sleeper) -> None:  # type: ignore[no-untyped-def]
    """Version 1 files written before the field existed (and by other versions) read fine."""
    store = SessionStore(tmp_path)
    record = store.add(record_for(sleeper))
    data = json.loads(store.path(record.id).read_text())
    del data["session"]["reconnecting_since"]
    store.path(record.id).write_text(json.dumps(data))
    assert store.get(record.id) == record


def test_status_with_unusable_state_folder_is_one_line(clean_env, tmp_path: Path) -> None:
    state = Path(clean_env["XDG_STATE_HOME"])
    (state / "fireflyhpc").mkdir(parents=True)
    (state / "fireflyhpc" / "sessions").write_text("a file where a folder should be")
    proc = run_cli("status", env=clean_env)
    assert one_error_line(proc) == f"fireflyhpc: error: session folder {state}/fireflyhpc/" \
                                   "sessions is not a folder"
    assert proc.returncode == ExitStatus.LOCAL


def test_stop_failures_have_their_status(clean_env, sleeper) -> None:  # type: ignore[no-untyped-def]
    proc = run_cli("stop", "0123abcd", env=clean_env)
    assert one_error_line(proc) == "fireflyhpc: error: no session 0123abcd (see `fireflyhpc " \
                                   "status`)"
    assert proc.returncode == ExitStatus.CONFIG
    store = SessionStore(Path(clean_env["XDG_STATE_HOME"]) / "fireflyhpc" / "sessions")
    away = store.add(record_for(sleeper, hostname="another-laptop"))
    python = store.add(record_for(sleeper, job_id="13"))  # `sleep` is not a connect command
    proc = run_cli("stop", "--all", env=clean_env)
    line = one_error_line(proc)
    assert f"could not stop {away.id}: session runs on another-laptop; stop it there" in line
    assert f"{python.id}: session opened from Python (pid {sleeper.pid})" in line
    assert proc.returncode == ExitStatus.CONFIG
