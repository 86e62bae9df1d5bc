"""The registry and the Python API: spawn two, quit one by pid, quit all;
stale and foreign entries; Firefly-compatible names; notebook.show."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

import fireflyhpc
from fireflyhpc.procutil import start_stamp
from fireflyhpc.errors import ConfigError, ServerError
from fireflyhpc.server import (quit_all_servers, quitAllFireflyServers, running_servers,
                               spawn_server, spawnFireflyServer)
from fireflyhpc.server import registry


def fetch(base_url: str, path: str, token: str) -> bytes:
    request = urllib.request.Request(base_url + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return bytes(response.read())


def write_entry(pid: int, create_time: float, hostname: str | None = None) -> Path:
    entry = registry.ServerEntry(hostname or socket.gethostname(), pid, create_time,
                                 "127.0.0.1", 1, "http://127.0.0.1:1/", "t" * 20)
    path = registry.registry_dir() / f"server-{entry.hostname}-{pid}.json"
    registry.write_json_atomic(path, entry.__dict__)
    return path


def test_spawn_two_quit_one_by_pid_then_all(data_tree: Path) -> None:
    first = spawn_server(data_tree, app="builtin")
    second = spawn_server([data_tree], token="chosen-token-0123456789")
    try:
        assert second.token == "chosen-token-0123456789"
        assert second.url == second.base_url + "?token=chosen-token-0123456789"
        for handle in (first, second):
            assert json.loads(fetch(handle.base_url, "datasets.json", handle.token or ""))
            assert handle.token not in " ".join(psutil.Process(handle.pid).cmdline())
        assert sorted(h.pid for h in running_servers()) == sorted([first.pid, second.pid])

        assert quit_all_servers(first.pid) == [first.pid]
        assert first.process is not None and first.process.wait(30) == 0
        assert [h.pid for h in running_servers()] == [second.pid]
        assert fetch(second.base_url, "datasets.json", second.token or "")

        assert quit_all_servers() == [second.pid]
        assert second.process is not None and second.process.wait(30) == 0
        assert running_servers() == []
        assert quit_all_servers() == []
    finally:
        first.stop()
        second.stop()


def test_handle_stop_and_context_manager(data_tree: Path) -> None:
    with spawn_server(data_tree) as handle:
        assert handle.port > 0 and handle.url.startswith(f"http://127.0.0.1:{handle.port}/?token=")
    assert handle.process is not None and handle.process.returncode == 0
    assert running_servers() == []
    handle.stop()  # idempotent


def test_stale_entry_of_a_dead_process_is_ignored_and_removed(data_tree: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    created = start_stamp(psutil.Process(dead.pid))
    dead.wait(30)
    stale = write_entry(dead.pid, created)
    with spawn_server(data_tree) as live:
        assert [h.pid for h in running_servers()] == [live.pid]
        assert not stale.exists()


def test_reused_pid_is_never_signalled() -> None:
    """An entry whose pid now belongs to another process (different create time)
    is stale: quit_all_servers must leave that process alone."""
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        real_time = start_stamp(psutil.Process(bystander.pid))
        stale = write_entry(bystander.pid, real_time - 1000.0)
        assert quit_all_servers() == []
        assert quit_all_servers(bystander.pid) == []
        assert bystander.poll() is None
        assert not stale.exists()
    finally:
        bystander.kill()
        bystander.wait(30)


def test_entries_of_other_hosts_are_left_alone() -> None:
    me = psutil.Process(os.getpid())
    foreign = write_entry(os.getpid(), start_stamp(me), hostname="some-other-node")
    assert running_servers() == []
    assert quit_all_servers() == []
    assert foreign.exists()


def test_unreadable_or_old_entries_are_skipped() -> None:
    (registry.registry_dir() / "server-garbage.json").write_text("{not json")
    (registry.registry_dir() / "server-v0.json").write_text(json.dumps({"version": 0}))
    assert running_servers() == []


def test_spawn_failure_reports_the_childs_error(tmp_path: Path) -> None:
    with pytest.raises(ServerError, match="does not exist"):
        spawn_server(tmp_path / "missing")
    assert running_servers() == []


def test_firefly_compatible_names(data_tree: Path, app_dir: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Firefly 3.6.0's positional order works; the arguments that do not apply are
    said in one warning, once per process each; public=True keeps loopback and token;
    quitAllFireflyServers takes a pid or the returned handle."""
    from fireflyhpc.server import api

    monkeypatch.setattr(api, "_said", set())
    with pytest.warns(UserWarning) as said:
        handle = spawnFireflyServer(0, "flask", str(data_tree), 30, 1, 60, True, True)
    as_app = spawnFireflyServer(0, "http", directory=str(app_dir), frames_per_second=24,
                                multiple_rooms=False, public=True)  # all said already
    try:
        assert len(said) == 1
        text = str(said[0].message)
        for name in ("method='flask'", "frames_per_second", "decimation_factor",
                     "multiple_rooms", "public"):
            assert name in text
        for server in (handle, as_app):
            assert server.base_url.startswith("http://127.0.0.1:")
            with pytest.raises(urllib.error.HTTPError, match="403"):
                urllib.request.urlopen(server.base_url + "datasets.json", timeout=10)
        assert fetch(handle.base_url, "data/galaxy/notes.txt", handle.token or "") == b"hello\n"
        assert b"test app" in fetch(as_app.base_url, "", as_app.token or "")
        assert fireflyhpc.spawnFireflyServer is spawnFireflyServer
        assert fireflyhpc.quitAllFireflyServers is quitAllFireflyServers
        assert quitAllFireflyServers(handle) == [handle.pid]
        assert quitAllFireflyServers() == [as_app.pid]
    finally:
        handle.stop()
        as_app.stop()


def test_firefly_arguments_mapping(app_dir: Path, data_tree: Path) -> None:
    from fireflyhpc.server.api import firefly_arguments

    assert firefly_arguments(None, None, None, None, None, None) == ({}, [])
    assert firefly_arguments("http", str(app_dir), None, None, False, False) == \
        ({"app": str(app_dir)}, [])
    assert firefly_arguments("flask", data_tree, 30, None, None, None) == \
        ({"directory": str(data_tree)}, ["frames_per_second", "method='flask'"])
    with pytest.raises(ConfigError, match="method='ws'"):
        firefly_arguments("ws", None, None, None, None, None)


def test_notebook_show(data_tree: Path) -> None:
    """show() of a handle or a token URL: an iframe whose URL holds a fresh ticket,
    never the token; each rendering asks the server for a new ticket."""
    from fireflyhpc import notebook

    with spawn_server(data_tree) as handle:
        assert handle.token is not None
        frame = notebook.show(handle, width=640, height=480)
        first, second = frame._repr_html_(), notebook.show(handle.url)._repr_html_()
        for html in (first, second):
            assert handle.token not in html
            assert html.startswith(f'<iframe src="{handle.base_url}?ticket=')
        assert first != second and 'width="640" height="480"' in first
        assert handle.token not in repr(frame) and handle.token not in handle._repr_html_()
    plain = notebook.show("http://127.0.0.1:5/page?x=1")  # no token: nothing to protect
    assert plain._repr_html_().startswith('<iframe src="http://127.0.0.1:5/page?x=1"')
    with pytest.raises(ConfigError):
        notebook.show(42)
    with pytest.raises(ConfigError):
        notebook.show("file:///etc/passwd")
    dead = fireflyhpc.server.ServerHandle("http://127.0.0.1:9/?token=t", "http://127.0.0.1:9/",
                                          9, 1, "t")
    with pytest.raises(ServerError, match="cannot reach"):
        notebook.show(dead).src()
    assert notebook.show(dead)._repr_html_().startswith("<pre>fireflyhpc: cannot reach")


def test_every_token_url_is_quoted_the_same_way() -> None:
    """The registry's URL, and the one builder it uses, quote the token."""
    from fireflyhpc.urls import token_url

    token = "a b/+&=?#%"
    assert token_url("http://h:1/", token) == "http://h:1/?token=a%20b%2F%2B%26%3D%3F%23%25"
    assert token_url("http://h:1/", None) == "http://h:1/"
    entry = registry.ServerEntry("h", 1, 0.0, "127.0.0.1", 1, "http://h:1/", token)
    assert entry.token_url == token_url("http://h:1/", token)


def test_the_url_builder_pulls_in_no_ssh_or_web_framework() -> None:
    code = ("import sys, fireflyhpc.urls; "
            "print(sorted(m for m in ('paramiko', 'flask', 'werkzeug', 'psutil') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert out.strip() == "[]"
