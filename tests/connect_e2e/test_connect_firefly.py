"""Firefly itself on the cluster: `remote-install --with-firefly=3.6.0` from wheels
uploaded from here (the bench has no index), `doctor` naming the version, a dataset
written on the node by Firefly's own Reader, and `connect` (payload auto) serving
Firefly's app with it in Chromium, and the bundled viewer with `--payload builtin`.

The Firefly venv is kept in the bench user's home between runs (like the shared
payload venv): a second run finds it installed."""

from __future__ import annotations

import contextlib
import re
import shlex
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fireflyhpc.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "viewer"))
import viewer_chromium  # noqa: E402  (the shared DevTools driver of the viewer tests)

pytestmark = [pytest.mark.cluster, pytest.mark.browser]
FIREFLY = "3.6.0"
PREFIX = f"~/ffhpc-firefly-{FIREFLY}/venv"
READER = """
import os, sys, numpy as np
from firefly.data_reader import Reader, ParticleGroup
reader = Reader(datadir=sys.argv[1], write_startup=False)
reader.static_data_dir = sys.argv[1] + "-static"  # not Firefly's site-packages
os.makedirs(reader.static_data_dir)
rng = np.random.default_rng(3)
reader.addParticleGroup(ParticleGroup("Dust", rng.normal(size=(4000, 3)),
                                      partsColors=[1.0, 0.5, 0.2, 1.0], loud=False))
reader.writeToDisk(loud=False)
"""


@contextlib.contextmanager
def reader_dataset(cluster, python: str, prefix: str) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A dataset written on node1 by Firefly's own Reader (:data:`READER`) into a new
    folder of the bench user's home; its name, removed again afterwards."""
    data = f"{prefix}-{time.monotonic_ns()}"
    cluster.ssh("node1", ["sh", "-c", f"cd && {shlex.join([python, '-c', READER, data])}"],
                timeout=300, check=True)
    try:
        yield data
    finally:
        cluster.ssh("login1", ["rm", "-rf", "--", str(cluster.home() / data),
                               str(cluster.home() / f"{data}-static")], timeout=60)


@pytest.fixture(scope="module")
def firefly_venv(bench):  # type: ignore[no-untyped-def]
    """The venv with Firefly, made by the real CLI; (its python, a profile using it)."""
    cluster = bench.cluster
    argv = ["--ssh-config", str(cluster.ssh_config), "--config", str(bench.config),
            "remote-install", "--cluster", "mini", "--prefix", PREFIX, "--index", "no",
            f"--with-firefly={FIREFLY}"]
    start = time.monotonic()
    assert main(argv) == 0
    took = time.monotonic() - start
    real = cluster.home() / PREFIX[2:]
    size = cluster.ssh("login1", ["du", "-sm", str(real)], timeout=120).stdout.split()[0]
    print(f"\nremote-install --with-firefly={FIREFLY}: {took:.1f} s, venv {size} MiB",
          file=sys.__stderr__)
    python = f"{real}/bin/python"
    config = bench.config.parent / "firefly.toml"
    text = bench.config.read_text()
    config.write_text(re.sub(r'(?m)^python = ".*"$', f'python = "{python}"', text))
    assert f'python = "{python}"' in config.read_text()
    return python, config


def test_install_doctor_reader_and_both_viewers(bench, firefly_venv, capsys) -> None:  # type: ignore[no-untyped-def]
    python, config = firefly_venv
    cluster = bench.cluster
    # installed again: nothing to do
    assert main(["--ssh-config", str(cluster.ssh_config), "--config", str(config),
                 "remote-install", "--cluster", "mini", "--prefix", PREFIX, "--index", "no",
                 f"--with-firefly={FIREFLY}"]) == 0
    assert f"Firefly {FIREFLY} was already in that venv" in capsys.readouterr().out
    assert main(["--ssh-config", str(cluster.ssh_config), "--config", str(config), "doctor",
                 "--cluster", "mini"]) == 0
    doctor = capsys.readouterr().out
    assert f"Firefly on the cluster: firefly {FIREFLY}; connect serves Firefly's own app" \
        in doctor, doctor

    with reader_dataset(cluster, python, "ffreader") as data:
        with viewer_chromium.Chromium() as chrome:
            page = chrome.new_page()
            run = bench.connect("--data", data, config=config)  # payload auto
            try:
                url = run.wait_url(timeout=180)
                assert "serving Firefly's own app" in run.stderr_text
                page.navigate(url)
                page.wait_for("typeof viewerParams !== 'undefined' && viewerParams.ready",
                              timeout=180)
                page.wait_for("typeof countParts === 'function' && countParts() === 4000",
                              timeout=120)
                assert page.evaluate("viewerParams.partsKeys") == ["Dust"]
            finally:
                assert run.stop(signal.SIGINT) == 0, run.stderr_text
            run = bench.connect("--data", data, "--payload", "builtin", config=config)
            try:
                url = run.wait_url(timeout=180)
                page.navigate(url)
                page.wait_for("document.body.dataset.state === 'ready'", timeout=120)
                assert page.evaluate("window.fireflyViewer.particles") == 4000
            finally:
                assert run.stop(signal.SIGINT) == 0, run.stderr_text
            page.close()


SENDER = """
import sys
import numpy as np
from firefly.data_reader import ArrayReader
from fireflyhpc.server.firefly_flask import send_reader
reader = ArrayReader(coordinates=[np.random.default_rng(2).normal(size=(500, 3))],
                     UInames=["Sent"], write_to_disk=False)
send_reader(reader, port=int(sys.argv[1]))
"""
OTHER_USER_FETCH = """
import sys, urllib.error, urllib.request
for method, route in (("GET", "/"), ("GET", "/browse?path=/"), ("POST", "/data_input"),
                      ("GET", "/socket.io/?EIO=4&transport=polling"), ("GET", "/combined")):
    req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}{route}", method=method,
                                 data=b'"{}"' if method == "POST" else None,
                                 headers={"Content-Type": "application/json"})
    try:
        print(route, urllib.request.urlopen(req, timeout=10).status)
    except urllib.error.HTTPError as exc:
        print(route, exc.code)
"""


def test_firefly_flask_features_behind_the_token(bench, firefly_venv) -> None:  # type: ignore[no-untyped-def]
    """`connect --payload firefly-flask`: Firefly's Flask server on the node, in
    Chromium through the tunnel: Load New Data lists the served folder only, data sent
    by a Python process on the node appears, another user on the node gets nothing."""
    python, config = firefly_venv
    cluster = bench.cluster
    with reader_dataset(cluster, python, "ffflask") as data:
        with viewer_chromium.Chromium() as chrome:
            page = chrome.new_page()
            run = bench.connect("--data", data, "--payload", "firefly-flask", config=config)
            try:
                url = run.wait_url(timeout=180)
                # the server's node and port ("job J on NODE, port P -> ...")
                node, port = re.search(r" on (\S+), port (\d+) -> ",
                                       run.read_stderr_until(" -> ")).groups()
                page.navigate(url)
                page.wait_for("typeof viewerParams !== 'undefined' && viewerParams.ready "
                              "&& typeof countParts === 'function' && countParts() === 4000",
                              timeout=180)
                assert page.evaluate("socketParams.socket.connected") is True
                # Load New Data: the served folder, and nothing else
                page.evaluate("loadNewData()")
                page.wait_for("!!document.getElementById('dataPickerBrowse')", timeout=60)
                page.evaluate("document.getElementById('dataPickerBrowse').click()")
                shown = "(document.getElementById('dataBrowserPath') || {}).textContent"
                listed = page.wait_for(f"({shown} || '').endsWith('/{data}') && {shown}",
                                       timeout=60)
                assert listed.endswith(f"/{data}")
                page.evaluate("requestBrowse('/')")
                page.wait_for("document.body.innerText.includes('Only the served data "
                              "folders')", timeout=60)
                # a Python process on the node sends data with the token
                # (the bench user may have other servers there: name ours)
                sent = cluster.ssh(node, [python, "-c", SENDER, port], timeout=300)
                assert sent.returncode == 0, sent.stderr
                page.wait_for("countParts() === 500", timeout=120)
                assert page.evaluate("viewerParams.partsKeys") == ["Sent"]
                # another user on the node: no page, no listing, no data, no Socket.IO
                other = cluster.run_in(node, ["runuser", "-u", cluster.other_user, "--",
                                              "/usr/bin/python3", "-c", OTHER_USER_FETCH, port])
                codes = [line.rsplit(" ", 1)[1] for line in other.stdout.splitlines()]
                assert codes == ["403"] * 5, (other.stdout, other.stderr)
                assert page.evaluate("countParts()") == 500  # nothing reached the page
            finally:
                assert run.stop(signal.SIGINT) == 0, run.stderr_text
            page.close()
