"""`fireflyhpc serve` stops, and cleans up, whenever the stop signal lands.

A signal handler that raised inside waitress's event loop was swallowed there
(waitress catches what a channel's handler raises, closes that channel and serves
on), so a SIGTERM that arrived while the loop was handling a connection left the
server running. These tests signal a real `serve` at many points: while it
starts, while requests are in flight, in the middle of a download, and again
while it closes; each point is repeated, since the old failure was a race.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
from serverkit import ServeProcess, start_serve

# Liveness bound, not a speed claim: a stopped server finishes within the grace it
# gives a busy worker thread (runner.ServerLoop.THREAD_GRACE, 5 s) plus its exit.
EXIT_BOUND = 20.0


def _wait_exit(process: subprocess.Popen[str], registry: Path, ready: Path | None) -> int:
    """The exit status, after checking that nothing of the server is left behind."""
    try:
        process.wait(EXIT_BOUND)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate(timeout=30)
        pytest.fail(f"serve did not exit within {EXIT_BOUND:g} s of the signal; stderr: {err}")
    _, err = process.communicate(timeout=30)
    assert "Traceback" not in err and "uncaptured python exception" not in err, err
    assert not list((registry / "servers").glob("server-*.json"))
    if ready is not None:
        assert not ready.exists()
    return process.returncode


def _spawn(data_tree: Path, ready: Path) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "fireflyhpc", "serve", str(data_tree), "--no-browser",
            "--ready-file", str(ready)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_signal_while_starting(data_tree: Path, tmp_path: Path, private_registry: Path) -> None:
    # How long a start takes here, then signals spread over that time: during the
    # imports (Python's own default: killed by the signal), before the socket is
    # bound, before the loop runs, and just after the URL line.
    started = time.monotonic()
    first = start_serve([str(data_tree)], tmp_path)
    startup = time.monotonic() - started
    first.process.send_signal(signal.SIGTERM)
    assert _wait_exit(first.process, private_registry, first.ready_file) == 0
    for i, fraction in enumerate((0.2, 0.4, 0.6, 0.8, 0.9, 1.0, 1.2)):
        ready = tmp_path / f"ready-{i}.json"
        process = _spawn(data_tree, ready)
        time.sleep(startup * fraction)
        process.send_signal(signal.SIGTERM)
        assert _wait_exit(process, private_registry, ready) in (0, -signal.SIGTERM)


@contextmanager
def _requests_in_flight(serve: ServeProcess, clients: int = 4) -> Iterator[threading.Event]:
    """Clients fetching files in a loop on fresh connections; yields once some were
    answered (the event), stops them on exit."""
    host, port = serve.base.split("//", 1)[1].rstrip("/").rsplit(":", 1)
    done = threading.Event()
    answered = threading.Semaphore(0)

    def client() -> None:
        while not done.is_set():
            conn = http.client.HTTPConnection(host, int(port), timeout=5)
            try:
                conn.request("GET", "/data/galaxy/Gas000.ffly",
                             headers={"Authorization": f"Bearer {serve.token}"})
                conn.getresponse().read()
                answered.release()
            except (OSError, http.client.HTTPException):
                pass  # the server went away under us: that is the point
            finally:
                conn.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(3 * clients):  # each client got answers: the loop is busy
            assert answered.acquire(timeout=30)
        yield done
    finally:
        done.set()
        for thread in threads:
            thread.join(30)


@pytest.mark.parametrize("repeat", range(6))
def test_sigterm_with_requests_in_flight(data_tree: Path, tmp_path: Path,
                                         private_registry: Path, repeat: int) -> None:
    serve = start_serve([str(data_tree)], tmp_path)
    with _requests_in_flight(serve):
        serve.process.send_signal(signal.SIGTERM)
        status = _wait_exit(serve.process, private_registry, serve.ready_file)
    assert status == 0


def test_sigterm_in_the_middle_of_a_download(tmp_path: Path, private_registry: Path) -> None:
    big = tmp_path / "big"
    big.mkdir()
    (big / "filenames.json").write_text('{"Gas": [["big/Gas000.ffly", 1]]}')
    (big / "Gas000.ffly").write_bytes(os.urandom(1024) * 32 * 1024)  # 32 MiB
    serve = start_serve([str(big)], tmp_path)
    host, port = serve.base.split("//", 1)[1].rstrip("/").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", "/data/big/Gas000.ffly",
                     headers={"Authorization": f"Bearer {serve.token}"})
        response = conn.getresponse()
        assert response.status == 200 and len(response.read(4096)) == 4096
        serve.process.send_signal(signal.SIGTERM)  # the rest is still to be sent
        assert _wait_exit(serve.process, private_registry, serve.ready_file) == 0
    finally:
        conn.close()


@pytest.mark.parametrize("repeat", range(3))
def test_signals_again_while_closing(data_tree: Path, tmp_path: Path, private_registry: Path,
                                     repeat: int) -> None:
    serve = start_serve([str(data_tree)], tmp_path)
    with _requests_in_flight(serve):
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGTERM, signal.SIGTERM):
            if serve.process.poll() is None:
                serve.process.send_signal(sig)
        status = _wait_exit(serve.process, private_registry, serve.ready_file)
    # A late signal may land after the handlers were given back, as the process
    # exits: then Python's default ends it, with nothing left to clean up.
    assert status in (0, -signal.SIGTERM, -signal.SIGHUP)
