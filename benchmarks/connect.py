#!/usr/bin/env python3
"""Benchmark: from `fireflyhpc connect --job ID` to the first 200 through the local URL,
next to the same steps done by hand with OpenSSH, on the mini cluster.

Run as root in the laptop (root) namespace with the mini cluster up and the bench
user's payload venv installed (`fireflyhpc remote-install`, which the bench profile
`$MINICLUSTER_DIR/fireflyhpc.toml` points at):

    python3 benchmarks/connect.py [--runs N] [--user-master]

It submits one holding job as the bench user and, alternating the two rows N times:

- fireflyhpc: `fireflyhpc connect --job ID --no-browser` (squeue, SSH to the login
  node and through it to the node, payload started with the token on stdin, port
  read back, OpenSSH tunnel masters, a GET through the tunnel) until a GET with the
  token through the printed URL answers 200;
- by hand: `ssh NODE python -m fireflyhpc serve --demo --port P` (ProxyJump from the
  ssh_config, the token read from the URL the server prints), then
  `ssh -N -L LP:localhost:P NODE`, polling the local port until a GET answers 200.

With ``--user-master`` both rows run as a user of a two-factor site does: an
ssh_config that multiplexes the login node (``ControlMaster auto``, ``ControlPath``,
``ControlPersist``) and a master started beforehand (``ssh -fN login1``), so neither
row logs in to login1 again; fireflyhpc uses that master and never closes it.

fireflyhpc's bytecode is compiled first, as pip compiles it when it installs the
package (an editable checkout, or PYTHONDONTWRITEBYTECODE, would otherwise have every
run compile its modules again and time that).

Only the ratio within one run means something: every end shares the same cores.
Each run's teardown is not timed (but is checked: nothing of it may survive).
"""

from __future__ import annotations

import argparse
import compileall
import http.client
import importlib.util
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

BENCH = Path(os.environ.get("MINICLUSTER_DIR", "/tmp/fireflyhpc-minicluster"))
SSH_CONFIG = BENCH / "ssh_config"  # --user-master: a copy that multiplexes login1
CONFIG = BENCH / "fireflyhpc.toml"
NODE_PORT, LOCAL_PORT = 27301, 27302  # below the ephemeral range: nothing else holds them


def ssh(host: str, command: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ssh", "-F", str(SSH_CONFIG), "-o", "BatchMode=yes", host, command],
                          capture_output=True, text=True, timeout=120, check=True, **kw)  # type: ignore[call-overload]


def get_status(port: int, token: str | None) -> int | None:
    """Status of GET / on 127.0.0.1:port (with the token), None if nothing answers."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        conn.request("GET", "/", headers=headers)
        status = conn.getresponse().status
        conn.close()
        return status
    except (OSError, http.client.HTTPException):
        return None


def first_200(port: int, token: str, deadline: float) -> None:
    while get_status(port, token) != 200:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no 200 on port {port}")
        time.sleep(0.02)


def read_line(proc: subprocess.Popen[str], prefix: str, deadline: float) -> str:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(prefix):
            return line.strip()
        if time.monotonic() > deadline:
            break
    raise RuntimeError(f"no {prefix!r} line (exit {proc.poll()})")


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGINT) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_fireflyhpc(job_id: str) -> float:
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "fireflyhpc", "--ssh-config", str(SSH_CONFIG),
                             "--config", str(CONFIG), "connect", "--cluster", "mini", "--job",
                             job_id, "--no-browser"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, stdin=subprocess.DEVNULL)
    try:
        url = read_line(proc, "http://", start + 120)
        parts = urlsplit(url)
        first_200(parts.port or 0, parse_qs(parts.query)["token"][0], start + 120)
        return time.monotonic() - start
    finally:
        stop(proc)


def run_by_hand(node: str, python: str) -> float:
    start = time.monotonic()
    serve = subprocess.Popen(["ssh", "-tt", "-F", str(SSH_CONFIG), "-o", "BatchMode=yes", node,
                              shlex.join([python, "-m", "fireflyhpc", "serve", "--demo",
                                          "--port", str(NODE_PORT), "--no-browser"])],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             stdin=subprocess.DEVNULL)
    forward = None
    try:
        url = read_line(serve, "http://", start + 120)
        token = parse_qs(urlsplit(url).query)["token"][0]
        forward = subprocess.Popen(["ssh", "-F", str(SSH_CONFIG), "-o", "BatchMode=yes", "-N",
                                    "-o", "ExitOnForwardFailure=yes", "-L",
                                    f"127.0.0.1:{LOCAL_PORT}:localhost:{NODE_PORT}", node],
                                   stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   text=True)
        first_200(LOCAL_PORT, token, start + 120)
        return time.monotonic() - start
    finally:
        if forward is not None:
            stop(forward, signal.SIGTERM)
        stop(serve, signal.SIGTERM)  # the pty closes: the server gets SIGHUP
        # (the [2] keeps pkill from matching its own command line)
        pattern = f"--port [{str(NODE_PORT)[0]}]{str(NODE_PORT)[1:]} --no-browser"
        ssh(node, f"pkill -u \"$(id -un)\" -f -- '{pattern}' || true")


def profile_python() -> str:
    for line in CONFIG.read_text().splitlines():
        if line.strip().startswith("python"):
            return line.split("=", 1)[1].strip().strip('"')
    raise SystemExit(f"no python in {CONFIG}")


def multiplexing_config(sockets: Path) -> Path:
    """The bench's ssh_config with login1 multiplexed, as two-factor sites advise."""
    text = SSH_CONFIG.read_text().replace(
        "Host login1\n", f"Host login1\n    ControlMaster auto\n    ControlPath {sockets}/cm-%C\n"
        "    ControlPersist 10m\n", 1)
    path = sockets / "ssh_config"
    path.write_text(text)
    return path


def main() -> int:
    global SSH_CONFIG
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--user-master", action="store_true",
                        help="both rows through a ControlMaster the user started on login1")
    args = parser.parse_args()
    sockets = None
    if args.user_master:
        sockets = Path(tempfile.mkdtemp(prefix="ffbench-cm-"))
        SSH_CONFIG = multiplexing_config(sockets)
        subprocess.run(["ssh", "-F", str(SSH_CONFIG), "-o", "BatchMode=yes", "-fN", "login1"],
                       check=True, timeout=60, stdin=subprocess.DEVNULL)
    try:
        return measure(args.runs, user_master=args.user_master)
    finally:
        if sockets is not None:
            subprocess.run(["ssh", "-F", str(SSH_CONFIG), "-O", "exit", "login1"],
                           capture_output=True, timeout=30)
            for item in sockets.iterdir():
                item.unlink(missing_ok=True)  # the master may remove its socket late
            sockets.rmdir()


def compile_package() -> None:
    """Bytecode for the fireflyhpc that ``python -m fireflyhpc`` runs (see the doc)."""
    spec = importlib.util.find_spec("fireflyhpc")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("fireflyhpc is not importable here")
    for folder in spec.submodule_search_locations:
        compileall.compile_dir(folder, quiet=1)


def measure(runs: int, *, user_master: bool) -> int:
    compile_package()
    python = profile_python()
    job_id = ssh("login1", "sbatch --parsable --job-name=ffbench-connect --output=/dev/null "
                 "--wrap 'sleep 1800'").stdout.strip()
    try:
        node = ""
        for _ in range(240):
            out = ssh("login1", f"squeue -h -j {job_id} -o '%T %N'").stdout.split()
            if out and out[0] == "RUNNING":
                node = out[1]
                break
            time.sleep(0.5)
        if not node:
            raise SystemExit(f"job {job_id} did not start")
        times: dict[str, list[float]] = {"fireflyhpc connect --job": [], "by hand (OpenSSH)": []}
        for _ in range(runs):
            times["by hand (OpenSSH)"].append(run_by_hand(node, python))
            times["fireflyhpc connect --job"].append(run_fireflyhpc(job_id))
        base = statistics.median(times["by hand (OpenSSH)"])
        how = ", through the user's own master on login1" if user_master else ""
        print(f"job {job_id} on {node}; {runs} runs each, interleaved{how}")
        print(f"{'row':<28}{'median s':>10}{'min s':>8}{'max s':>8}{'vs hand':>9}")
        for name, values in times.items():
            med = statistics.median(values)
            print(f"{name:<28}{med:>10.2f}{min(values):>8.2f}{max(values):>8.2f}"
                  f"{med / base:>8.2f}x")
        leftovers = ssh(node, "pgrep -u \"$(id -un)\" -af '[f]ireflyhpc serve' || true").stdout
        print("leftover payloads on the node:", leftovers.strip() or "none")
    finally:
        ssh("login1", f"scancel {job_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
