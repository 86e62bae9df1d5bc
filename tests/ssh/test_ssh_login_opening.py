"""A connect session's login, opened in a thread (fireflyhpc.session.login) against the
real loopback sshd: the connection is handed over once, one nobody takes is closed
even when it arrives late, errors reach the caller, and a stop abandons a login that
hangs (a silent server) without leaving ssh behind."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import psutil
import pytest

from fireflyhpc.errors import SSHError
from fireflyhpc.session.login import LoginOpening
from fireflyhpc.session.request import ConnectRequest


def opening(tmp_path: Path, ssh_config: Path, stop: threading.Event | None = None,
            login: str = "target", backend: str = "openssh") -> LoginOpening:
    profile = tmp_path / "fireflyhpc.toml"
    profile.write_text(f'[clusters.t]\nlogin = "{login}"\nssh = "{backend}"\n')
    request = ConnectRequest(cluster="t", config=str(profile), ssh_config=str(ssh_config))
    return LoginOpening(request, request.settings(), stop or threading.Event())


def our_ssh() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True)
            if p.is_running() and p.name() == "ssh"]


def settles(predicate, timeout: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_the_connection_is_handed_over_once_and_an_untaken_one_is_closed(
        make_config, tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = make_config()
    taken = opening(tmp_path, config)
    conn = taken.result()
    try:
        assert conn.run(["echo", "here"]).stdout == "here\n"
        taken.close()  # taken already: not the opening's to close
        assert conn.is_active()
    finally:
        conn.close()
    assert settles(lambda: not our_ssh())
    # Abandoned at once, while ssh still logs in: the thread closes it when it arrives.
    untaken = opening(tmp_path, config)
    untaken.close()
    assert settles(lambda: not untaken._thread.is_alive())
    assert settles(lambda: not our_ssh()), "an untaken login is closed"


def test_the_python_fallback_logs_in_in_the_callers_thread(
        make_config, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """getpass turns the terminal's echo off while it waits: it must not be left waiting
    on a thread that a stop abandons. So paramiko logs in when asked, where asked."""
    python = opening(tmp_path, make_config(), backend="paramiko")
    assert python._thread is None
    conn = python.result()
    try:
        assert conn.backend == "paramiko" and conn.run(["echo", "py"]).stdout == "py\n"
    finally:
        conn.close()


def test_errors_reach_the_caller(make_config, tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = make_config(known_hosts="")  # the host key is unknown: ssh refuses
    with pytest.raises(SSHError, match="host key"):
        opening(tmp_path, config).result()
    assert settles(lambda: not our_ssh())


def test_a_stop_abandons_a_login_that_hangs(make_config, tmp_path) -> None:  # type: ignore[no-untyped-def]
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()  # accepts (the kernel does) and never says a word: ssh waits
    port = silent.getsockname()[1]
    config = make_config(more=f"Host silent\n    HostName 127.0.0.1\n    Port {port}\n"
                              "    ConnectTimeout 60\n")
    stop = threading.Event()
    hanging = opening(tmp_path, config, stop, login="silent")
    try:
        assert settles(lambda: bool(our_ssh()), 10), "ssh is connecting"
        time.sleep(0.5)
        stop.set()
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            hanging.result()
        assert time.monotonic() - started < 10
        assert settles(lambda: not our_ssh()), "no ssh is left behind"
    finally:
        silent.close()
