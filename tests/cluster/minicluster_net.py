"""Commands, processes and the network of the mini cluster (all side effects on the host).

Every command is an argv list. The network: the whole bench range is routed to
``unreachable`` in the root namespace first, then one namespace per host and a veth
pair per link; login1 does not forward, compute nodes have no default route.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from pathlib import Path
from typing import Sequence

from minicluster_layout import BENCH_RANGE, MARKER, Host, Layout, render_hosts


class BenchError(Exception):
    """A step of the bench failed; the message says which and why."""


def run(argv: Sequence[str], *, check: bool = True, timeout: float = 120,
        input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``argv``, capture its output; raise BenchError if it fails and ``check``."""
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                              input=input, stdin=None if input is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"timed out after {timeout}s: {shlex.join(argv)}") from exc
    except FileNotFoundError as exc:
        raise BenchError(f"not installed: {argv[0]}") from exc
    if check and proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise BenchError(f"failed ({proc.returncode}): {shlex.join(argv)}: {' | '.join(tail)}")
    return proc


def in_netns(netns: str, argv: Sequence[str]) -> list[str]:
    """``argv`` run inside network namespace ``netns`` (with its /etc/netns files)."""
    return ["ip", "netns", "exec", netns, *argv]


def as_host(host: Host, argv: Sequence[str]) -> list[str]:
    """``argv`` run as host ``host``: its network namespace and its own hostname."""
    script = f"hostname {shlex.quote(host.name)} && exec {shlex.join(argv)}"
    return in_netns(host.netns, ["unshare", "--uts", "--", "sh", "-c", script])


# -- processes -------------------------------------------------------------------------

def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def read_pid(pidfile: Path) -> int | None:
    """The pid recorded in ``pidfile`` if that process is alive, else None."""
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def start_daemon(argv: Sequence[str], pidfile: Path, log: Path) -> int:
    """Start a foreground daemon detached from us; record its pid in ``pidfile``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        # cwd "/": jobs inherit slurmd's working directory, which must outlive whatever
        # directory `up` was run from.
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True, cwd="/")
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    pidfile.write_text(f"{proc.pid}\n")
    return proc.pid


def kill_pids(pids: Sequence[int], grace: float = 5.0) -> None:
    """SIGTERM ``pids``, wait up to ``grace`` seconds, SIGKILL what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
            time.sleep(0.05)
        if not any(pid_alive(p) for p in pids):
            return


def netns_pids(netns: str) -> list[int]:
    """Pids of every process inside network namespace ``netns``."""
    proc = run(["ip", "netns", "pids", netns], check=False)
    return [int(p) for p in proc.stdout.split() if p.isdigit()]


def wait_for(what: str, probe, timeout: float, interval: float = 0.25):  # type: ignore[no-untyped-def]
    """Call ``probe`` until it returns something truthy; raise BenchError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


# -- network -----------------------------------------------------------------------------

def existing_netns() -> set[str]:
    """Names of all network namespaces on this machine."""
    out = run(["ip", "netns", "list"], check=False).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def link_exists(dev: str) -> bool:
    """True if network device ``dev`` exists in the root namespace."""
    return run(["ip", "link", "show", "dev", dev], check=False).returncode == 0


def guard_route_present() -> bool:
    """True if the root namespace routes the bench range to ``unreachable``."""
    out = run(["ip", "route", "show", "type", "unreachable", BENCH_RANGE], check=False).stdout
    return bool(out.strip())


def add_guard_route() -> None:
    """Route the bench range to nowhere, so no bench packet can ever take the default route."""
    run(["ip", "route", "replace", "unreachable", BENCH_RANGE])


def remove_guard_route() -> None:
    """Remove the guard route (last step of ``down``)."""
    if guard_route_present():
        run(["ip", "route", "del", "unreachable", BENCH_RANGE])


def build_network(layout: Layout) -> None:
    """Create the namespaces, veth pairs, addresses and routes; write per-host /etc/hosts."""
    for host in layout.hosts:
        run(["ip", "netns", "add", host.netns])
        run(["ip", "-n", host.netns, "link", "set", "lo", "up"])
        etc = Path("/etc/netns") / host.netns
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "hosts").write_text(render_hosts(layout))
    for link in layout.links:
        ip_left = ["ip"] if link.left_ns is None else ["ip", "-n", link.left_ns]
        run([*ip_left, "link", "add", link.left_dev, "type", "veth",
             "peer", "name", link.right_dev, "netns", link.right_ns])
        run([*ip_left, "addr", "add", f"{link.left_addr}/{link.prefix}", "dev", link.left_dev])
        run([*ip_left, "link", "set", link.left_dev, "up"])
        run(["ip", "-n", link.right_ns, "addr", "add", f"{link.right_addr}/{link.prefix}",
             "dev", link.right_dev])
        run(["ip", "-n", link.right_ns, "link", "set", link.right_dev, "up"])
    # login1 is a host, not a router: the laptop must never reach a compute node.
    run(in_netns(layout.login.netns, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=0"]))
    for node in layout.nodes:
        # Reach login1's other addresses (slurmctld), but no default route.
        run(["ip", "-n", node.netns, "route", "add", BENCH_RANGE,
             "via", layout.node_gateway(node)])


def remove_network(layout: Layout) -> None:
    """Kill everything inside the bench namespaces, then delete them and their files."""
    present = existing_netns()
    ours = [h.netns for h in layout.hosts if h.netns in present]
    for _ in range(10):  # again: an sshd or slurmd may have forked meanwhile
        pids = [pid for ns in ours for pid in netns_pids(ns) if pid_alive(pid)]
        if not pids:
            break
        kill_pids(pids)
    for ns in ours:
        run(["ip", "netns", "del", ns], check=False)
    for link in layout.links:
        if link.left_ns is None and link_exists(link.left_dev):
            run(["ip", "link", "del", link.left_dev], check=False)
    for host in layout.hosts:
        hosts_file = Path("/etc/netns") / host.netns / "hosts"
        if hosts_file.exists() and hosts_file.read_text().startswith(MARKER):
            hosts_file.unlink()
        try:
            hosts_file.parent.rmdir()
        except OSError:
            pass


def tcp_open(netns: str | None, addr: str, port: int) -> bool:
    """True if a TCP connect to ``addr:port`` from ``netns`` (None = root) succeeds."""
    code = ("import socket,sys\n"
            "s=socket.socket(); s.settimeout(2)\n"
            f"sys.exit(s.connect_ex(({addr!r},{port})))")
    argv = ["python3", "-c", code]
    return run(in_netns(netns, argv) if netns else argv, check=False, timeout=10).returncode == 0
