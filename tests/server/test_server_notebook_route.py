"""How a kernel finds its Jupyter server (info files, JupyterHub's prefix) and when
the frame takes the proxy route; the real server and proxy are exercised in
tests/viewer/test_viewer_jupyter.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fireflyhpc.errors import ConfigError
from fireflyhpc.notebook_route import JupyterServer, find_jupyter, frame_base


def info(path: Path, pid: int, **extra: object) -> None:
    path.write_text(json.dumps({"pid": pid, "base_url": "/user/me/", "token": "jt",
                                "url": "http://127.0.0.1:1/user/me/", **extra}))


def test_find_the_server_that_started_this_kernel(tmp_path: Path) -> None:
    env = {"JUPYTER_RUNTIME_DIR": str(tmp_path), "JPY_PARENT_PID": "4242"}
    assert find_jupyter(env) is None
    info(tmp_path / "jpserver-4141.json", 4141)  # another server: not ours
    assert find_jupyter(env) is None
    info(tmp_path / "nbserver-4242.json", 4242, base_url="nb")  # classic notebook
    assert find_jupyter(env) == JupyterServer("/nb/", "http://127.0.0.1:1/user/me/", "jt", 4242)
    info(tmp_path / "jpserver-4242.json", 4242)
    assert find_jupyter(env) == JupyterServer("/user/me/", "http://127.0.0.1:1/user/me/",
                                              "jt", 4242)
    (tmp_path / "jpserver-4242.json").write_text("{half written")
    hub = {**env, "JUPYTERHUB_SERVICE_PREFIX": "/user/you"}
    assert find_jupyter(hub) == JupyterServer("/nb/", "http://127.0.0.1:1/user/me/", "jt", 4242)
    assert find_jupyter({"JUPYTERHUB_SERVICE_PREFIX": "/user/you"}) == JupyterServer("/user/you/")
    assert find_jupyter({"JPY_PARENT_PID": "x", "JUPYTER_DATA_DIR": str(tmp_path)}) is None


def test_frame_base_choices(tmp_path: Path) -> None:
    url = "http://127.0.0.1:8123/"
    assert frame_base(url, {}) == url  # no Jupyter server: direct
    assert frame_base(url, {}, proxy=False) == url
    with pytest.raises(ConfigError, match="no Jupyter server"):
        frame_base(url, {}, proxy=True)
    hub = {"JUPYTERHUB_SERVICE_PREFIX": "/user/me/"}  # cannot be asked: no url, no token
    assert frame_base(url, hub, proxy=True) == "/user/me/proxy/8123/"
    assert frame_base("http://node7:8123/", hub, proxy=True) == "http://node7:8123/"
    assert frame_base(url, hub, proxy=False) == url
    env = {"JUPYTER_RUNTIME_DIR": str(tmp_path), "JPY_PARENT_PID": str(os.getpid())}
    info(tmp_path / f"jpserver-{os.getpid()}.json", os.getpid())  # nothing listens on :1
    assert frame_base(url, env, proxy=True) == "/user/me/proxy/8123/"
