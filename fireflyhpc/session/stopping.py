"""`fireflyhpc stop`: end recorded sessions as Ctrl-C would.

A session whose connect process runs here gets SIGTERM (it cleans up itself) and
is waited for. A detached session has no process: its server's process group is
ended over SSH (on the node; for an srun step, srun's on the login node), and its
job cancelled if fireflyhpc submitted it.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import Iterator

import psutil

from fireflyhpc.config import load_settings, resolve
from fireflyhpc.errors import ConfigError, FireflyHPCError, LocalError, SSHError
from fireflyhpc.procutil import process_alive
from fireflyhpc.session import launch
from fireflyhpc.session.records import Liveness, SessionRecord, SessionStore, check_id, liveness

log = logging.getLogger(__name__)

WAIT_FOR_CONNECT = 40.0  # seconds a signalled connect may take to clean up


def stop_sessions(session_id: str | None, *, ssh_config: str | None = None,
                  config: str | None = None, ssh: str | None = None,
                  store: SessionStore | None = None) -> Iterator[str]:
    """Stop session ``session_id`` (all sessions if None); yield one line per session.

    ``ssh`` is the --ssh flag (the SSH backend for detached sessions; None: the
    environment, then the session's cluster profile).

    Raises ConfigError for an unknown id; when sessions could not be ended, the
    error of the first one (its class and exit status), its message naming all.
    """
    store = store or SessionStore()
    if session_id is not None:
        record = store.get(check_id(session_id))
        if record is None:
            raise ConfigError(f"no session {session_id}", hint="see `fireflyhpc status`")
        records = [record]
    else:
        records = store.list()
        if not records:
            yield "no sessions"
            return
    failures: list[tuple[str, FireflyHPCError]] = []
    for record in records:
        try:
            yield stop_one(record, store, ssh_config=ssh_config,
                           backend=_backend(config, ssh, record.cluster))
        except FireflyHPCError as exc:
            failures.append((record.id, exc))
    if failures:
        first = failures[0][1]
        first.message = "could not stop " + "; ".join(f"{sid}: {exc}" for sid, exc in failures)
        first.hint = None
        raise first


def _backend(config: str | None, flag: str | None, cluster: str | None) -> str:
    """The SSH backend for a session of ``cluster``: flag > env > its profile > auto."""
    try:
        return load_settings(config, {"ssh": flag}, cluster=cluster).ssh
    except ConfigError:  # the profile is gone or broken: flag > env > auto
        return resolve({"ssh": flag}, os.environ, None).ssh


def stop_one(record: SessionRecord, store: SessionStore, *, ssh_config: str | None,
             backend: str = "auto") -> str:
    """End one session; return what was done.

    Raises ConfigError when it cannot be ended from here, LocalError when its
    connect does not finish, SSHError/RemoteCommandError for a detached one.
    """
    state = liveness(record)
    if state is Liveness.DEAD:
        store.remove(record.id)
        return f"{record.id}: its connect process was already gone; entry removed"
    if record.detached:
        return _stop_detached(record, store, ssh_config, backend)
    if state is Liveness.UNKNOWN:
        raise ConfigError(f"session runs on {record.hostname}; stop it there")
    return _signal_connect(record, store)


def _signal_connect(record: SessionRecord, store: SessionStore) -> str:
    if not _is_connect_command(record.pid):
        # Opened with fireflyhpc.connect() in a Python or Jupyter process: SIGTERM
        # would end that whole process, so leave it to its owner.
        raise ConfigError(f"session opened from Python (pid {record.pid}); call "
                              ".close() on it there, or end that process")
    try:
        os.kill(record.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + WAIT_FOR_CONNECT
    while _still_running(record):
        if time.monotonic() > deadline:
            raise LocalError(f"connect (pid {record.pid}) is still cleaning up after "
                                  f"{WAIT_FOR_CONNECT:g} s")
        time.sleep(0.1)
    store.remove(record.id)  # normally gone already: connect removes it itself
    return f"{record.id}: stopped (job {record.job_id} on {record.node})"


def _is_connect_command(pid: int) -> bool:
    """True if ``pid`` is a `fireflyhpc ... connect` command (not a Python API user)."""
    try:
        argv = psutil.Process(pid).cmdline()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return True  # gone already: nothing to fear from signalling
    except psutil.AccessDenied:
        return False
    return "connect" in argv and any("fireflyhpc" in part for part in argv)


def _still_running(record: SessionRecord) -> bool:
    """True while the connect process lives (a zombie waiting for its parent has ended)."""
    return process_alive(record.pid, record.pid_create_time)


def _stop_detached(record: SessionRecord, store: SessionStore, ssh_config: str | None,
                   backend: str) -> str:
    from fireflyhpc.scheduler import Scheduler
    from fireflyhpc.ssh import open_connection

    if not (record.login and record.node and record.job_id and record.remote_pgid):
        store.remove(record.id)
        return f"{record.id}: incomplete entry removed"
    done = []
    with open_connection(record.login, ssh_config=ssh_config, backend=backend) as login:
        server = launch.RemoteServer(node=record.node, pgid=record.remote_pgid,
                                     port=record.remote_port or 0,
                                     run_name=launch.run_name(record.job_id, record.id))
        try:
            held_by = login if record.launch == "srun" else login.connect_to(record.node)
            launch.stop_payload(held_by, server)
            done.append(f"server on {record.node} stopped")
        except SSHError as exc:
            log.warning("cannot reach %s to stop the server: %s", record.node, exc)
            done.append(f"server on {record.node} unreachable (the job's end stops it)")
        if record.submitted_by_us:
            scheduler = Scheduler(lambda argv, input=None: login.run(
                argv, input=input, check=False, timeout=120), where=record.login)
            scheduler.cancel([record.job_id])
            done.append(f"job {record.job_id} cancelled")
    store.remove(record.id)
    return f"{record.id}: " + ", ".join(done)
