"""The real `fireflyhpc serve` process: its URL line, ready file, signals, token
handling, and one-line errors for bad input."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import urllib.request
from pathlib import Path

import psutil
import pytest
from serverkit import GAS_BYTES, start_serve, stop_serve

from fireflyhpc.procutil import start_stamp
from fireflyhpc.errors import ExitStatus


def run_serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a serve that is expected to fail fast."""
    return subprocess.run([sys.executable, "-m", "fireflyhpc", "serve", *args, "--no-browser"],
                          capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, **(env or {})))


def get(url: str, token: str) -> bytes:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return bytes(response.read())


def assert_one_line_error(proc: subprocess.CompletedProcess[str], status: int, text: str) -> None:
    assert proc.returncode == status, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("fireflyhpc: error:") and text in lines[-1], proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_url_line_ready_file_and_registry(data_tree: Path, tmp_path: Path,
                                          private_registry: Path) -> None:
    serve = start_serve([str(data_tree), "--app", "builtin"], tmp_path)
    try:
        assert serve.url.startswith("http://127.0.0.1:") and "?token=" in serve.url
        ready = json.loads(serve.ready_file.read_text())
        assert ready["pid"] == serve.process.pid
        assert ready["host"] == "127.0.0.1" and ready["app"] == "builtin"
        assert ready["url"] == serve.base == f"http://127.0.0.1:{ready['port']}/"
        assert serve.token not in serve.ready_file.read_text()
        assert stat.S_IMODE(serve.ready_file.stat().st_mode) == 0o600
        assert get(serve.base + "data/galaxy/Gas000.ffly", serve.token) == GAS_BYTES

        entries = list((private_registry / "servers").glob("server-*.json"))
        assert len(entries) == 1
        assert stat.S_IMODE(entries[0].stat().st_mode) == 0o600
        assert stat.S_IMODE((private_registry / "servers").stat().st_mode) == 0o700
        entry = json.loads(entries[0].read_text())
        assert (entry["pid"], entry["port"], entry["url"]) == (serve.process.pid, ready["port"],
                                                             serve.base)
        assert entry["create_time"] == start_stamp(psutil.Process(serve.process.pid))
    finally:
        status = stop_serve(serve)
    assert status == 0
    assert not serve.ready_file.exists()
    assert not list((private_registry / "servers").glob("server-*.json"))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signals_exit_cleanly(data_tree: Path, tmp_path: Path, private_registry: Path,
                              sig: int) -> None:
    serve = start_serve([str(data_tree)], tmp_path)
    children = psutil.Process(serve.process.pid).children(recursive=True)
    assert children == []  # one process: no reloader, no workers
    assert serve.ready_file.exists()
    assert stop_serve(serve, sig) == 0
    _, err = serve.process.communicate(timeout=30)
    assert "Traceback" not in err
    assert not serve.ready_file.exists()
    assert not list((private_registry / "servers").glob("server-*.json"))


def test_token_from_environment_never_on_command_line(data_tree: Path, tmp_path: Path) -> None:
    token = "env-token-abcdefghijklmnop"
    serve = start_serve([str(data_tree)], tmp_path, env={"FIREFLYHPC_TOKEN": token})
    try:
        assert serve.token == token
        cmdline = " ".join(psutil.Process(serve.process.pid).cmdline())
        assert token not in cmdline and "serve" in cmdline
        assert get(serve.base + "datasets.json", token)
    finally:
        assert stop_serve(serve) == 0


def test_token_file(data_tree: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("file-token-0123456789\n")
    token_file.chmod(0o600)
    serve = start_serve([str(data_tree), "--token-file", str(token_file)], tmp_path,
                        env={"FIREFLYHPC_TOKEN": "ignored-because-file-wins"})
    try:
        assert serve.token == "file-token-0123456789"
        assert get(serve.base + "datasets.json", serve.token)
    finally:
        assert stop_serve(serve) == 0


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_token_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("file-token-0123456789\n")
    token_file.chmod(mode)
    proc = run_serve("--token-file", str(token_file))
    assert_one_line_error(proc, ExitStatus.CONFIG, "accessible by other users")
    assert "chmod 600" in proc.stderr


def test_missing_and_empty_token_files(tmp_path: Path) -> None:
    assert_one_line_error(run_serve("--token-file", str(tmp_path / "nope")), ExitStatus.CONFIG,
                          "cannot read token file")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    empty.chmod(0o600)
    assert_one_line_error(run_serve("--token-file", str(empty)), ExitStatus.CONFIG, "empty")


@pytest.mark.parametrize("value", ["", "  "])
def test_empty_token_variable_is_refused(data_tree: Path, value: str) -> None:
    # It used to mean "a random token", silently.
    assert_one_line_error(run_serve(str(data_tree), env={"FIREFLYHPC_TOKEN": value}),
                          ExitStatus.CONFIG, "$FIREFLYHPC_TOKEN is set but empty")


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_no_token_on_non_loopback_is_refused(host: str) -> None:
    proc = run_serve("--no-token", "--host", host)
    assert_one_line_error(proc, ExitStatus.CONFIG, "refusing --no-token on non-loopback")


def test_no_token_on_loopback_serves_without_token(data_tree: Path, tmp_path: Path) -> None:
    serve = start_serve([str(data_tree), "--no-token"], tmp_path)
    try:
        assert "token" not in serve.url
        with urllib.request.urlopen(serve.url + "data/galaxy/Gas000.ffly", timeout=30) as resp:
            assert resp.read() == GAS_BYTES
    finally:
        assert stop_serve(serve) == 0


def _free_range(size: int) -> tuple[int, int]:
    """``size`` consecutive free loopback ports above 20000 (checked by binding them)."""
    for low in range(20000 + os.getpid() % 20000, 65000, size):
        socks = []
        try:
            for port in range(low, low + size):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return low, low + size - 1
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise AssertionError("no free port range")


def test_port_range_takes_a_free_port_inside_it(data_tree: Path, tmp_path: Path) -> None:
    low, high = _free_range(3)
    with socket.socket() as busy:  # two of the three are taken: the third must be used
        busy.bind(("127.0.0.1", low))
        busy.listen(1)
        with socket.socket() as busy2:
            busy2.bind(("127.0.0.1", low + 1))
            busy2.listen(1)
            serve = start_serve([str(data_tree), "--port", f"{low}-{high}"], tmp_path)
            try:
                assert serve.base == f"http://127.0.0.1:{high}/"
                assert get(serve.base + "data/galaxy/Gas000.ffly", serve.token) == GAS_BYTES
            finally:
                assert stop_serve(serve) == 0


def test_port_range_all_taken_is_one_line_error() -> None:
    low, high = _free_range(2)
    with socket.socket() as a, socket.socket() as b:
        a.bind(("127.0.0.1", low))
        b.bind(("127.0.0.1", high))
        a.listen(1)
        b.listen(1)
        proc = run_serve("--port", f"{low}-{high}")
    assert_one_line_error(proc, ExitStatus.SERVER, f"every port of {low}-{high} is in use")


@pytest.mark.parametrize("port", ["-1", "65536", "abc", "1.5", "9000-8000", "80-90", "1-2-3"])
def test_bad_port_values(port: str) -> None:
    proc = run_serve("--port", port)
    assert proc.returncode == ExitStatus.USAGE
    assert "--port" in proc.stderr and "Traceback" not in proc.stderr


def test_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        proc = run_serve("--port", str(busy.getsockname()[1]))
    assert_one_line_error(proc, ExitStatus.SERVER, "already in use")


def test_bad_data_dir_and_app(tmp_path: Path) -> None:
    assert_one_line_error(run_serve(str(tmp_path / "missing")), ExitStatus.CONFIG,
                          "does not exist")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(run_serve(str(tmp_path / "empty")), ExitStatus.CONFIG,
                          "no Firefly dataset")
    assert_one_line_error(run_serve("--app", str(tmp_path)), ExitStatus.CONFIG,
                          "containing index.html")


def test_import_fireflyhpc_stays_light() -> None:
    code = ("import sys, fireflyhpc, fireflyhpc.cli, fireflyhpc.server; "
            "print(sorted(m for m in ('flask', 'waitress', 'firefly') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "[]", proc.stderr


def test_demo_dataset_is_served(tmp_path: Path) -> None:
    serve = start_serve(["--demo"], tmp_path, env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    try:
        index = json.loads(get(serve.base + "datasets.json", serve.token))
        assert len(index["datasets"]) == 1
        path = index["datasets"][0]["path"]
        manifest = json.loads(get(serve.base + path + "filenames.json", serve.token))
        entries = [entry[0] for files in manifest.values() for entry in files]
        assert any(name.endswith(".ffly") for name in entries)
        for name in entries:  # entries are "<dir>/<file>": resolve against the dataset's path
            body = get(serve.base + path + name.split("/", 1)[1], serve.token)
            assert body
    finally:
        assert stop_serve(serve) == 0


def test_unwritable_ready_file_is_one_line_error(data_tree: Path, tmp_path: Path,
                                                 private_registry: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "fireflyhpc", "serve", str(data_tree),
                           "--no-browser", "--ready-file", str(tmp_path / "no" / "such" / "f")],
                          capture_output=True, text=True, timeout=60)
    assert_one_line_error(proc, ExitStatus.SERVER, "cannot write ready file")
    assert not list((private_registry / "servers").glob("server-*.json"))


def test_server_runs_when_the_registry_cannot_be_written(data_tree: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    serve = start_serve([str(data_tree)], tmp_path,
                        env={"FIREFLYHPC_RUNTIME_DIR": str(blocker / "registry")})
    try:
        assert get(serve.base + "datasets.json", serve.token)
    finally:
        assert stop_serve(serve) == 0
    _, err = serve.process.communicate(timeout=30)
    assert "cannot record this server in the registry" in err


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback here")
def test_ipv6_loopback(data_tree: Path, tmp_path: Path) -> None:
    serve = start_serve([str(data_tree), "--host", "::1"], tmp_path)
    try:
        assert serve.url.startswith("http://[::1]:")
        assert json.loads(serve.ready_file.read_text())["host"] == "::1"
        assert get(serve.base + "data/galaxy/Gas000.ffly", serve.token) == GAS_BYTES
    finally:
        assert stop_serve(serve) == 0


def test_malformed_manifest_is_refused_at_start(data_tree: Path) -> None:
    manifest = data_tree / "galaxy" / "filenames.json"
    manifest.write_text('{"Gas": [["galaxy/Gas000.ffly", 10]')  # cut short
    assert_one_line_error(run_serve(str(data_tree)), ExitStatus.CONFIG,
                          f"{manifest}: not valid JSON")


def test_empty_data_dir_name_is_refused(tmp_path: Path) -> None:
    # "" used to mean the current directory
    proc = subprocess.run([sys.executable, "-m", "fireflyhpc", "serve", "", "--no-browser"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert_one_line_error(proc, ExitStatus.CONFIG, "a data directory is an empty name")


def test_unusable_paths_have_a_documented_status(tmp_path: Path) -> None:
    assert_one_line_error(run_serve(str(tmp_path / ("x" * 300))), ExitStatus.CONFIG,
                          "File name too long")
    locked = tmp_path / "locked"
    (locked / "data").mkdir(parents=True)
    locked.chmod(0o600)  # listable by its owner, not traversable
    argv = [sys.executable, "-m", "fireflyhpc", "serve", str(locked / "data"), "--no-browser"]
    if os.geteuid() == 0:  # root passes any mode: drop the capabilities that let it
        argv = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *argv]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    finally:
        locked.chmod(0o700)
    assert_one_line_error(proc, ExitStatus.CONFIG,
                          f"cannot read data directory {str(locked / 'data')!r}: "
                          "Permission denied")
