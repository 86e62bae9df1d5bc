#!/usr/bin/env python3
"""Benchmark: time to the first drawn frame of the 1,000,000-particle demo, in headless
Chromium, through `fireflyhpc connect` on the mini cluster and from `fireflyhpc serve`
on this machine, for both viewers (the bundled one and Firefly's own app).

Run as root with the mini cluster up, after `remote-install --with-firefly` into
``~/ffhpc-firefly-3.6.0/venv`` of the bench user (what
tests/connect_e2e/test_connect_firefly.py makes; ``--python`` names another venv):

    python3 benchmarks/first_frame.py [--runs N]

Each measurement opens a fresh Chromium (empty cache) on the server's token URL. A
script injected before any page script polls on every animation frame and notes
``performance.now()`` (milliseconds since the navigation started, the token
redirect included) when the viewer has drawn: the bundled viewer's first draw with
all particles loaded, Firefly's app ready with all particles counted. Starting the
server or the connect session is not timed. Rows alternate, N runs each; medians.
Software WebGL (SwiftShader) on 2 shared cores: only ratios within one run mean
anything.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "viewer"))

from connect import CONFIG, SSH_CONFIG, read_line, ssh, stop  # noqa: E402
from viewer_chromium import Chromium  # noqa: E402

PARTICLES = 1_000_000
DRAWN = {
    "builtin": ("window.fireflyViewer && window.fireflyViewer.draws > 0 && "
                f"window.fireflyViewer.particles === {PARTICLES}"),
    "firefly": ("typeof viewerParams !== 'undefined' && viewerParams.ready === true && "
                f"typeof countParts === 'function' && countParts() === {PARTICLES}"),
}
WATCH = """(function () {
  function check() {
    try { if (%s) { window.__firstFrame = performance.now(); return; } } catch (e) {}
    requestAnimationFrame(check);
  }
  requestAnimationFrame(check);
})();"""


def first_frame_ms(url: str, viewer: str, timeout: float = 600) -> float:
    """Milliseconds from navigation start to the first frame, in a fresh Chromium."""
    with Chromium() as chrome:
        page = chrome.new_page()
        page.call("Page.addScriptToEvaluateOnNewDocument", {"source": WATCH % DRAWN[viewer]})
        page.navigate(url)
        value = page.wait_for("window.__firstFrame", timeout=timeout, interval=0.1)
        page.close()
        return float(value)


def serve_local(viewer: str, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "fireflyhpc", "serve", "--demo", "--app",
                             viewer, "--no-browser"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, stdin=subprocess.DEVNULL,
                            env=env)
    return proc, read_line(proc, "http://", time.monotonic() + 120)


def connect(viewer: str, job_id: str, config: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "fireflyhpc", "--ssh-config",
                             str(SSH_CONFIG), "--config", str(config), "connect", "--cluster",
                             "mini", "--job", job_id, "--payload", viewer, "--no-browser"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            stdin=subprocess.DEVNULL)
    return proc, read_line(proc, "http://", time.monotonic() + 180)


def measure(start: object, viewer: str) -> float:
    proc, url = start  # type: ignore[misc]
    try:
        return first_frame_ms(url, viewer)
    finally:
        stop(proc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--python", default="/home/ffuser/ffhpc-firefly-3.6.0/venv/bin/python",
                        help="the cluster python with fireflyhpc and Firefly")
    parser.add_argument("--viewers", default="builtin,firefly")
    args = parser.parse_args()
    viewers = args.viewers.split(",")
    config = Path(os.environ.get("TMPDIR", "/tmp")) / "ffbench-first-frame.toml"
    lines = [f'python = "{args.python}"' if line.startswith("python") else line
             for line in CONFIG.read_text().splitlines()]
    config.write_text("\n".join(lines) + "\n")
    env = dict(os.environ)
    job_id = ssh("login1", "sbatch --parsable --job-name=ffbench-frame --output=/dev/null "
                 "--wrap 'sleep 3600'").stdout.strip()
    try:
        for _ in range(240):
            out = ssh("login1", f"squeue -h -j {job_id} -o '%T %N'").stdout.split()
            if out and out[0] == "RUNNING":
                break
            time.sleep(0.5)
        else:
            raise SystemExit(f"job {job_id} did not start")
        # warm-up: the demo data made once on each side, not timed
        for viewer in viewers[:1]:
            measure(serve_local(viewer, env), viewer)
            measure(connect(viewer, job_id, config), viewer)
        rows: dict[str, list[float]] = {}
        for _ in range(args.runs):
            for viewer in viewers:
                rows.setdefault(f"{viewer}: serve (local)", []).append(
                    measure(serve_local(viewer, env), viewer))
                rows.setdefault(f"{viewer}: connect (bench)", []).append(
                    measure(connect(viewer, job_id, config), viewer))
        print(f"job {job_id}; {args.runs} runs each, interleaved; ms to the first frame")
        print(f"{'row':<28}{'median':>9}{'min':>8}{'max':>8}{'vs local':>10}")
        for name, values in rows.items():
            base = statistics.median(rows[name.split(":")[0] + ": serve (local)"])
            med = statistics.median(values)
            print(f"{name:<28}{med:>9.0f}{min(values):>8.0f}{max(values):>8.0f}"
                  f"{med / base:>9.2f}x")
    finally:
        ssh("login1", f"scancel {job_id}")
        config.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
