"""Firefly itself on the cluster: `remote-install --with-firefly=3.6.0` from wheels
uploaded from here (the bench has no index), `doctor` naming the version, a dataset
written on the node by Firefly's own Reader, and `connect` (payload auto) serving
Firefly's app with it in Chromium, and the bundled viewer with `--payload builtin`.

The Firefly venv is kept in the bench user's home between runs (like the shared
payload venv): a second run finds it installed."""

from __future__ import annotations

import re
import shlex
import signal
import sys
import time
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

    data = f"ffreader-{time.monotonic_ns()}"
    cluster.ssh("node1", ["sh", "-c", f"cd && {shlex.join([python, '-c', READER, data])}"],
                timeout=300, check=True)
    try:
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
    finally:
        cluster.ssh("login1", ["rm", "-rf", "--", str(cluster.home() / data),
                               str(cluster.home() / f"{data}-static")], timeout=60)
