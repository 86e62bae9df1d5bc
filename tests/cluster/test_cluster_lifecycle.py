"""`down` leaves nothing behind and `up` is idempotent.

Disruptive: it takes the shared bench down, so it is ordered last in the session
(marker ``cluster_disruptive``) and always brings the bench back up.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.cluster_disruptive]


@pytest.fixture(autouse=True)
def alone_on_the_bench(cluster) -> None:
    """By hand, do not pull the bench from under other test sessions (CI has none)."""
    others = cluster.other_sessions()
    if others and os.environ.get("CI", "").lower() not in ("true", "1", "yes"):
        pytest.skip(f"other test sessions use the mini cluster right now (pids {others})")


def output(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout


def live_processes() -> list[tuple[int, str]]:
    """(pid, command line) of every process on the machine that is not a zombie."""
    procs = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except (OSError, IndexError):
            continue
        if state != "Z" and cmdline:
            procs.append((int(entry.name), cmdline))
    return procs


def netns_inodes(cluster) -> set[int]:
    """Inode numbers of the bench's network namespaces (what /proc/PID/ns/net names)."""
    inodes = set()
    for ns in cluster.env["NETNS"].split():
        try:
            inodes.add(os.stat(f"/run/netns/{ns}").st_ino)
        except OSError:
            pass
    return inodes


def in_netns(pid: int, inodes: set[int]) -> bool:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino in inodes
    except OSError:
        return False


def leftovers(cluster, munged_pid: int | None, inodes: set[int]) -> list[str]:
    """Everything of the bench that still exists (empty once `down` did its job)."""
    found = []
    netns = output(["ip", "netns", "list"])
    found += [f"netns {ns}" for ns in cluster.env["NETNS"].split() if ns in netns]
    links = output(["ip", "-o", "link", "show"])
    found += [f"link {cluster.laptop_veth}"] if f" {cluster.laptop_veth}@" in links else []
    routes = output(["ip", "route", "show", "table", "all"])
    found += [f"route {line}" for line in routes.splitlines() if "198.18." in line]
    for pid, cmd in live_processes():
        prog = cmd.split()[0].rsplit("/", 1)[-1]
        bench_sshd = prog.startswith("sshd") and str(cluster.dir) in cmd
        if prog in ("slurmctld", "slurmd", "slurmstepd") or bench_sshd \
                or pid == munged_pid or in_netns(pid, inodes):
            found.append(f"process {pid}: {cmd}")
    for path in [*(Path("/etc/netns") / ns for ns in cluster.env["NETNS"].split()),
                 Path("/etc/slurm/slurm.conf"), cluster.dir / "env", cluster.ssh_config,
                 cluster.dir / "state"]:
        if path.exists():
            found.append(f"file {path}")
    return found


def recorded_munged_pid(cluster) -> int | None:
    try:
        return int((cluster.dir / "state" / "run" / "bench-munged-login1.pid").read_text())
    except (OSError, ValueError):
        return None  # a munged the bench did not start serves the machine; not ours to stop


def test_down_leaves_nothing_and_up_twice_works(cluster) -> None:
    munged_pid = recorded_munged_pid(cluster)
    inodes = netns_inodes(cluster)
    assert len(inodes) == len(cluster.env["NETNS"].split())
    try:
        down = cluster.minicluster_command("down")
        assert down.returncode == 0, down.stdout + down.stderr
        assert leftovers(cluster, munged_pid, inodes) == []
        status = cluster.status()
        assert status.returncode == 3, status.stdout
        assert status.stdout.strip().endswith("minicluster: down")
        # Nothing of the bench is reported as running.
        assert [l for l in status.stdout.splitlines()[:-1]
                if l.startswith("ok") and "munge" not in l] == []

        for _ in range(2):
            up = cluster.minicluster_command("up")
            assert up.returncode == 0, up.stdout + up.stderr
        status = cluster.status()
        assert status.returncode == 0, status.stdout
        proc = cluster.ssh("node2", ["hostname"])
        assert proc.stdout.strip() == "node2", proc.stderr
    finally:
        # Other tests share the bench: whatever happened, leave it up.
        if cluster.status().returncode != 0:
            cluster.minicluster_command("up")


def test_status_fails_when_part_of_the_bench_is_missing(cluster) -> None:
    """Kill one slurmd: status must notice (exit 1), and `up` must repair everything."""
    pidfile = cluster.dir / "state" / "run" / "bench-slurmd-node1.pid"
    try:
        os.kill(int(pidfile.read_text()), 9)
        status = cluster.status()
        assert status.returncode == 1, status.stdout
        assert "MISSING slurmd@node1" in status.stdout
    finally:
        up = cluster.minicluster_command("up", "--reuse")
        assert up.returncode == 0, up.stdout + up.stderr
    assert cluster.status().returncode == 0


@pytest.mark.cluster_fault
def test_status_notices_the_laptop_link_down(cluster) -> None:
    """What fault tests do (take the laptop<->login1 link down) is visible in status."""
    with cluster.link_down():
        status = cluster.status()
        assert status.returncode == 1, status.stdout
        assert "MISSING laptop reaches sshd on login1" in status.stdout
    assert cluster.status().returncode == 0
