"""The README's set-up commands work as written.

The first one (install, then the main job on the embedded demo) is run for real:
`pip install .` into a fresh virtual environment from a copy of the source tree, then
the command after `&&`, whose browser is a script that records the URL it was given.
Offline: the venv sees this interpreter's packages and pip is told not to use an index,
so no test traffic leaves the machine. The second command is what CI runs.
"""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent


def setup_blocks() -> list[str]:
    """The code blocks of the README's "Set up" section, in order."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Set up\n", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```\n(.*?)```", section, re.S)]


def test_setup_section_has_the_two_commands() -> None:
    install_and_run, tests = setup_blocks()
    assert install_and_run.startswith("pip install . && fireflyhpc ")
    ci = (ROOT / ".ci" / "run").read_text()
    assert "test-command" in ci
    text = (ROOT / "README.md").read_text()
    marked = text.split("<!-- test-command -->", 1)[1].split("<!-- /test-command -->", 1)[0]
    assert tests in marked, "CI runs the block between the test-command markers"
    assert tests.startswith("tests/install-deps && ")


def source_copy(dest: Path) -> Path:
    if shutil.which("git") is None:
        pytest.skip("needs git to list the source files")
    out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    for name in out.splitlines():
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


def test_install_and_run_command_serves_the_demo(tmp_path: Path) -> None:
    install_and_run = setup_blocks()[0]
    install, run = install_and_run.split(" && ", 1)
    assert shlex.split(install) == ["pip", "install", "."]
    src = source_copy(tmp_path / "src")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                   check=True, timeout=120)
    bindir = venv / "bin"
    # `pip install .`, offline: dependencies are already there, the build backend too.
    done = subprocess.run([str(bindir / "pip"), *shlex.split(install)[1:], "--no-index",
                           "--no-build-isolation", "--quiet", "--disable-pip-version-check"],
                          cwd=src, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    installed = subprocess.run([str(bindir / "python"), "-c",
                                "import fireflyhpc; print(fireflyhpc.__file__)"],
                               capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert installed.stdout.startswith(str(venv)), "the venv's own copy must be the one run"

    opened = tmp_path / "opened"
    browser = tmp_path / "browser"
    browser.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$1\" > {shlex.quote(str(opened))}\n")
    browser.chmod(0o755)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "DISPLAY": ":99",
           "BROWSER": f"{browser} %s", "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "FIREFLYHPC_RUNTIME_DIR": str(tmp_path / "run")}
    env.pop("FIREFLYHPC_TOKEN", None)
    proc = subprocess.Popen(shlex.split(run), env=env, cwd=tmp_path, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        line = proc.stdout.readline().strip() if ready else ""
        assert line.startswith("http://127.0.0.1:"), (line, proc.poll())
        url = line.split()[0]
        deadline = time.monotonic() + 30
        while not opened.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert opened.read_text().strip() == url, "the browser is opened on the printed URL"
        parts = urlsplit(url)
        token = parse_qs(parts.query)["token"][0]
        base = f"{parts.scheme}://{parts.netloc}"

        def get(path: str) -> tuple[int, bytes]:
            req = urllib.request.Request(base + path,
                                         headers={"Authorization": f"Bearer {token}"})
            with urllib.request.urlopen(req, timeout=30) as response:
                return response.status, response.read()

        status, page = get("/")
        assert status == 200 and b"<html" in page.lower()
        status, body = get("/datasets.json")
        datasets = json.loads(body)
        assert status == 200 and "demo" in json.dumps(datasets).lower(), datasets
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0, proc.stderr.read()
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
