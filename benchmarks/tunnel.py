#!/usr/bin/env python3
"""Benchmark the tunnel against what people type by hand, on the mini cluster.

Run as root in the laptop (root) namespace with the mini cluster up:

    python3 benchmarks/tunnel.py [--size MiB] [--par-size MiB] [--conns N] [--rows a,b]

It starts the payload (``tunnel_payload.py``: source/sink/echo) on node1 as the
bench user, twice: on node1's loopback (for the ssh-hop rows) and on node1's
cluster address (for the rows whose login node connects to the node). Then, for
each row, it starts the forwarder, measures through its local port:

- bulk: one download of ``--size`` (default 1024 MiB), MiB/s;
- rtt: 1000 sequential 1 KiB request/response on one connection, median and p99 ms;
- par: ``--conns`` (64) simultaneous downloads of ``--par-size`` (16 MiB) each:
  how many complete, aggregate MiB/s;

and prints a table with ratios to OpenSSH ProxyJump (only ratios within one run
mean anything: every end shares the same two cores).

The rows named "2FA ..." go through a two-factor login node: a second sshd on
login1 asking a one-time code after the key (``tests/cluster/minicluster_otp.py``,
started for the run and stopped after it). Those forwarders run on a terminal of
their own (a pty) where the benchmark types the code when asked, as a user would;
the 2FA ratios are to the 2FA ProxyJump row.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import pty
import re
import select
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import termios
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import tunnel_payload as payload

ENV_FILE = Path(os.environ.get("MINICLUSTER_DIR", "/tmp/fireflyhpc-minicluster")) / "env"
# Fixed ports below the ephemeral range (32768+), so no outgoing connection holds them.
PORT_LOOP, PORT_ADDR, PORT_CHAIN = 27101, 27102, 27103
MiB = 2**20


def read_env(path: Path) -> dict[str, str]:
    """The mini cluster's env file as a dict (shell quoting removed)."""
    env = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            env[key] = " ".join(shlex.split(value))
    return env


OTP_ROWS = ("2FA fireflyhpc default", "2FA fireflyhpc ssh/paramiko", "2FA OpenSSH ProxyJump")


@dataclass
class Row:
    name: str
    argv: list[str]
    code: str | None = None  # typed on the row's terminal whenever it asks (2FA rows)
    result: dict[str, float] = field(default_factory=dict)  # the round being measured
    runs: list[dict[str, float]] = field(default_factory=list)  # every finished round

    def summary(self) -> dict[str, float]:
        """Median of each measure over the rounds; connections completed: the worst."""
        if not self.runs:
            return {}
        keys = self.runs[0].keys()
        out = {k: statistics.median(run[k] for run in self.runs) for k in keys}
        out["par_done"] = min(run["par_done"] for run in self.runs)
        return out


def rows(env: dict[str, str], port: int, otp: object | None = None) -> list[Row]:
    """Every forwarder to compare, each listening on 127.0.0.1:``port`` (the 2FA rows
    only with ``otp``, the two-factor login of tests/cluster/minicluster_otp.py)."""
    cfg = env["MINICLUSTER_SSH_CONFIG"]
    addr = env["NODE1_ADDR"]

    def ff(remote_port: int, *extra: str, backend: str | None = None, config: str = cfg,
           login: str = env["LOGIN_HOST"]) -> list[str]:
        chosen = ["--ssh", backend] if backend else []
        return [sys.executable, "-m", "fireflyhpc", "--ssh-config", config, *chosen, "tunnel",
                "node1", str(remote_port), "--login", login, "--port", str(port), *extra]

    ssh = ["ssh", "-F", cfg, "-N", "-o", "ExitOnForwardFailure=yes"]
    found = [
        Row("fireflyhpc default (auto)", ff(PORT_LOOP)),
        Row("fireflyhpc ssh/openssh", ff(PORT_LOOP, "--hop", "ssh", backend="openssh")),
        Row("fireflyhpc direct/openssh", ff(PORT_ADDR, "--hop", "direct", backend="openssh")),
        Row("fireflyhpc ssh/paramiko", ff(PORT_LOOP, "--hop", "ssh", backend="paramiko")),
        Row("fireflyhpc direct/paramiko", ff(PORT_ADDR, "--hop", "direct",
                                             backend="paramiko")),
        Row("OpenSSH ProxyJump", [*ssh, "-J", env["LOGIN_HOST"], "-L",
                                  f"{port}:localhost:{PORT_LOOP}", "node1"]),
        Row("manual chain", ["ssh", "-F", cfg, "-o", "ExitOnForwardFailure=yes", "-L",
                             f"{port}:localhost:{PORT_CHAIN}", env["LOGIN_HOST"], "ssh", "-N",
                             "-o", "ExitOnForwardFailure=yes", "-L",
                             f"{PORT_CHAIN}:localhost:{PORT_LOOP}", "node1"]),
        Row("OpenSSH single hop", [*ssh, "-L", f"{port}:{addr}:{PORT_ADDR}", env["LOGIN_HOST"]]),
        Row("sshtunnel (nested)", [sys.executable, str(Path(__file__).resolve()),
                                   "--sshtunnel-row", str(port)]),
    ]
    if otp is not None:
        cfg2, code, login2 = str(otp.ssh_config), otp.code, otp.alias  # type: ignore[attr-defined]
        default, paramiko, jump = OTP_ROWS
        found += [
            Row(default, ff(PORT_LOOP, config=cfg2, login=login2), code),
            Row(paramiko, ff(PORT_LOOP, "--hop", "ssh", config=cfg2, login=login2,
                             backend="paramiko"), code),
            Row(jump, ["ssh", "-F", cfg2, "-N", "-o", "ExitOnForwardFailure=yes", "-J", login2,
                       "-L", f"{port}:localhost:{PORT_LOOP}", "node1"], code),
        ]
    return found


def start_on_terminal(argv: list[str], code: str) -> tuple[subprocess.Popen[bytes], list[bytes]]:
    """Start ``argv`` with a new pty as its controlling terminal; a thread types ``code``
    whenever it shows a password or code prompt. Returns the process and its output."""
    master, slave = pty.openpty()

    def take_terminal() -> None:  # runs in the child, after setsid
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave,
                            start_new_session=True, preexec_fn=take_terminal)
    os.close(slave)
    seen: list[bytes] = []

    def answer() -> None:
        done = 0
        while True:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen.append(chunk)
            text = b"".join(seen)
            asked = len(re.findall(rb"Password: |[Cc]ode: ", text))
            while done < asked:
                os.write(master, code.encode() + b"\n")
                done += 1
        os.close(master)

    threading.Thread(target=answer, daemon=True).start()
    return proc, seen


def start_payloads(env: dict[str, str], workdir: Path) -> list[subprocess.Popen[bytes]]:
    """Run the payload on node1 (loopback and cluster address) as the bench user."""
    script = workdir / "tunnel_payload.py"
    shutil.copy(HERE / "tunnel_payload.py", script)
    script.chmod(0o644)
    procs = []
    for host, port in (("127.0.0.1", PORT_LOOP), (env["NODE1_ADDR"], PORT_ADDR)):
        proc = subprocess.Popen(["ip", "netns", "exec", env["NODE1_NETNS"], "runuser", "-u",
                                 env["CLUSTER_USER"], "--", "/usr/bin/python3", str(script), host,
                                 str(port)], stdout=subprocess.PIPE)
        procs.append(proc)
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != b"ready":
            raise SystemExit(f"payload on node1 {host}:{port} did not start")
    return procs


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
        proc.wait()


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> bool:
    """True once 127.0.0.1:port forwards to the payload (an echo round trip works)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.settimeout(5)
                sock.sendall(b"ECHO\n" + b"p" * payload.MSG)
                if len(sock.recv(payload.MSG)) > 0:
                    return True
        except OSError:
            time.sleep(0.2)
    return False


def measure(row: Row, port: int, args: argparse.Namespace) -> None:
    """Start the row's forwarder, measure through it, stop it (OSError: the bench broke)."""
    row.result = {}
    seen: list[bytes] = []
    if row.code is not None:
        proc, seen = start_on_terminal(row.argv, row.code)
    else:
        proc = subprocess.Popen(row.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
    try:
        if not wait_port(port, proc):
            err = proc.stderr.read1(4000) if proc.poll() is not None and proc.stderr else \
                b"".join(seen)[-2000:]
            print(f"  {row.name}: did not come up {err.decode(errors='replace').strip()}")
            return
        row.result["bulk"] = payload.bulk(port, args.size * MiB)
        row.result["rtt_med"], row.result["rtt_p99"] = payload.round_trips(port, args.rtt)
        done, rate = payload.parallel(port, args.conns, args.par_size * MiB)
        row.result["par_done"], row.result["par_rate"] = done, rate
        row.runs.append(dict(row.result))
        print(f"  {row.name}: {fmt(row.result, None)}", flush=True)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        time.sleep(0.5)


def fmt(r: dict[str, float], b: dict[str, float] | None) -> str:
    if not r:
        return "failed"
    text = (f"{r['bulk']:8.1f} {r['rtt_med']:8.3f} {r['rtt_p99']:8.2f} "
            f"{int(r['par_done']):>4}/{row_conns} {r['par_rate']:8.1f}")
    if b:
        text += (f"   x{r['bulk'] / b['bulk']:5.2f}  x{r['rtt_med'] / b['rtt_med']:5.2f}"
                 f"  x{r['par_rate'] / b['par_rate']:5.2f}")
    return text


row_conns = 64


def sshtunnel_row(port: int) -> None:
    """Two nested sshtunnel forwarders: laptop -> login1 -> node1:22, then node1 loopback."""
    import sshtunnel  # type: ignore[import-untyped]

    env = read_env(ENV_FILE)
    key = env["CLUSTER_USER_KEY"]
    outer = sshtunnel.SSHTunnelForwarder(
        (env["LOGIN_ADDR"], 22), ssh_username=env["CLUSTER_USER"], ssh_pkey=key,
        remote_bind_address=(env["NODE1_ADDR"], 22), local_bind_address=("127.0.0.1", 0))
    outer.start()
    inner = sshtunnel.SSHTunnelForwarder(
        ("127.0.0.1", outer.local_bind_port), ssh_username=env["CLUSTER_USER"], ssh_pkey=key,
        remote_bind_address=("127.0.0.1", PORT_LOOP), local_bind_address=("127.0.0.1", port))
    inner.start()
    try:
        while True:
            time.sleep(3600)
    finally:
        inner.stop()
        outer.stop()


def main() -> None:
    global row_conns
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="bulk download, MiB")
    parser.add_argument("--par-size", type=int, default=16, help="per parallel connection, MiB")
    parser.add_argument("--conns", type=int, default=64)
    parser.add_argument("--rtt", type=int, default=1000, help="sequential round trips")
    parser.add_argument("--rows", default="", help="comma-separated substrings of row names")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure every row this many times (alternating the order); "
                             "the table shows medians")
    parser.add_argument("--port", type=int, default=27110, help="local port of every row")
    parser.add_argument("--sshtunnel-row", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sshtunnel_row:
        return sshtunnel_row(args.sshtunnel_row)
    row_conns = args.conns
    env = read_env(ENV_FILE)

    def wanted(name: str) -> bool:
        return not args.rows or any(s in name for s in args.rows.split(","))

    otp = None
    if any(wanted(name) for name in OTP_ROWS):
        sys.path.insert(0, str(HERE.parent / "tests" / "cluster"))
        from minicluster_otp import start_otp_login

        otp = start_otp_login(ENV_FILE.parent)
    selected = [r for r in rows(env, args.port, otp) if wanted(r.name)]
    workdir = Path(tempfile.mkdtemp(prefix="ffhpc-bench-"))
    workdir.chmod(0o755)
    payloads = start_payloads(env, workdir)
    try:
        print(f"bulk {args.size} MiB, {args.rtt} x 1 KiB round trips, "
              f"{args.conns} x {args.par_size} MiB parallel", flush=True)
        for round_no in range(args.rounds):
            if args.rounds > 1:
                print(f"round {round_no + 1} of {args.rounds}", flush=True)
            for row in selected if round_no % 2 == 0 else selected[::-1]:
                measure_row(row, args, env, workdir, payloads)
    finally:
        stop_all(payloads)
        shutil.rmtree(workdir, ignore_errors=True)
        if otp is not None:
            otp.stop()
    base = next((r.summary() for r in selected if r.name == "OpenSSH ProxyJump"), None)
    base2 = next((r.summary() for r in selected if r.name == OTP_ROWS[2]), None)
    print(f"\n{'row':28} {'MiB/s':>8} {'med ms':>8} {'p99 ms':>8} {'par':>7} {'MiB/s':>8}"
          "   ratios to ProxyJump (2FA rows: to 2FA ProxyJump): bulk, median rtt, parallel")
    for row in selected:
        print(f"{row.name:28} {fmt(row.summary(), base2 if row.code else base)}")
    default = next((r.summary() for r in selected if r.name == "fireflyhpc default (auto)"),
                   None)
    for row in selected:
        if row.code and default and row.summary():
            ratio = row.summary()["bulk"] / default["bulk"]
            print(f"{row.name}: bulk x{ratio:.2f} of the key-login default")


def measure_row(row: Row, args: argparse.Namespace, env: dict[str, str], workdir: Path,
                payloads: list[subprocess.Popen[bytes]]) -> None:
    """Measure one row; restart the payload (in place) if the bench was rebuilt under us."""
    for _attempt in range(3):
        if any(proc.poll() is not None for proc in payloads):
            print("  (payload gone; restarting it)", flush=True)
            stop_all(payloads)
            time.sleep(20)
            payloads[:] = start_payloads(env, workdir)
        try:
            measure(row, args.port, args)
            return
        except OSError as exc:
            print(f"  {row.name}: broke ({exc}); trying again", flush=True)
            row.result.clear()


if __name__ == "__main__":
    main()
