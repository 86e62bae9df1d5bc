"""The mini cluster is real: sshd per host, Slurm runs jobs, the network is isolated."""

from __future__ import annotations

import errno
import os
import re
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster


def job_info(cluster, job_id: str) -> dict[str, str]:
    """``scontrol show job`` as a dict (empty once Slurm forgot the job)."""
    proc = cluster.ssh("login1", ["scontrol", "show", "job", "-o", job_id])
    return dict(re.findall(r"(\w+)=(\S*)", proc.stdout)) if proc.returncode == 0 else {}


def wait_job_done(cluster, job_id: str, limit: float = 300) -> dict[str, str]:
    """Poll (bounded) until the job left PENDING/RUNNING/COMPLETING; return its info."""
    deadline = time.monotonic() + limit
    info: dict[str, str] = {}
    while time.monotonic() < deadline:
        info = job_info(cluster, job_id)
        if info.get("JobState") not in ("PENDING", "RUNNING", "COMPLETING", "CONFIGURING"):
            return info
        time.sleep(0.5)
    pytest.fail(f"job {job_id} did not finish within {limit}s: {info}")


def submit(cluster, *sbatch_args: str, user: str | None = None) -> subprocess.CompletedProcess:
    """sbatch from the user's home on login1 (where the job's output file is written)."""
    return cluster.ssh("login1", ["sbatch", "--parsable", "--chdir", "."] + list(sbatch_args),
                       user=user)


# -- ssh ----------------------------------------------------------------------------------

def test_ssh_login1_with_generated_config_prints_its_hostname(cluster) -> None:
    proc = cluster.ssh("login1", ["hostname"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "login1"


@pytest.mark.parametrize("node", ["node1", "node2"])
def test_ssh_compute_node_goes_through_login1(cluster, node: str) -> None:
    proc = cluster.ssh(node, ["sh", "-c", "hostname; echo $SSH_CONNECTION"])
    assert proc.returncode == 0, proc.stderr
    hostname, connection = proc.stdout.split("\n")[:2]
    assert hostname == node
    # The node saw the connection coming from login1's side of the link, not the laptop.
    client_addr, _, server_addr, _ = connection.split()
    assert server_addr == cluster.addr(node)
    assert client_addr != cluster.laptop_addr and client_addr.startswith("198.18.")


def test_other_user_logs_in_with_its_own_key_only(cluster) -> None:
    proc = cluster.ssh("node1", ["id", "-un"], user=cluster.other_user)
    assert (proc.returncode, proc.stdout.strip()) == (0, cluster.other_user), proc.stderr
    # The tool user's key does not open the other user's account.
    wrong = cluster.ssh("login1", ["true"], options=["-o", f"User={cluster.other_user}"])
    assert wrong.returncode == 255
    assert "Permission denied" in wrong.stderr


def test_space_user_has_a_home_with_a_space_and_tcsh_on_every_host(cluster) -> None:
    for host in cluster.hosts:
        proc = cluster.ssh(host, ["sh", "-c", 'id -un; printf "%s\\n" "$HOME"; pwd; '
                                  'getent passwd "$(id -un)" | cut -d: -f7'],
                           user=cluster.space_user)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines() == [cluster.space_user, "/home/ff space",
                                            "/home/ff space", "/usr/bin/tcsh"]
    assert cluster.home(cluster.space_user) == Path("/home/ff space")


def test_strict_host_key_checking_uses_the_bench_known_hosts(cluster, tmp_path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    proc = cluster.ssh("login1", ["true"], options=["-o", f"UserKnownHostsFile={empty}"])
    assert proc.returncode == 255
    assert "Host key verification failed" in proc.stderr


def test_compute_node_sshd_forwards_to_its_own_loopback(cluster) -> None:
    """Later layers forward a local port to a server on a node's 127.0.0.1."""
    argv = cluster.ssh_argv("node1", options=["-W", "127.0.0.1:22"])
    with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as proc:
        try:
            banner = proc.stdout.readline()
        finally:
            proc.kill()
    assert banner.startswith(b"SSH-2.0-OpenSSH"), proc.stderr.read()


def test_client_files_are_usable_by_root_and_private(cluster) -> None:
    for user in (cluster.user, cluster.other_user):
        st = cluster.key(user).stat()
        assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.getuid()
    text = cluster.ssh_config.read_text()
    for line in ("Host login1", "ProxyJump login1", "IdentitiesOnly yes",
                 "StrictHostKeyChecking yes", f"UserKnownHostsFile {cluster.known_hosts}"):
        assert line in text
    proc = subprocess.run(["sh", "-c", '. "$1/env" && echo "$LOGIN_HOST $NODES"', "sh",
                           str(cluster.dir)], capture_output=True, text=True, timeout=10)
    assert proc.stdout.strip() == "login1 node1 node2"


# -- Slurm ---------------------------------------------------------------------------------

def test_sinfo_on_login1_shows_both_nodes_idle(cluster) -> None:
    proc = cluster.ssh("login1", ["sinfo", "-h", "-N", "-o", "%N %P %t"])
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()]
    partitions = {p.rstrip("*") for _, p, _ in rows}
    assert partitions == {cluster.default_partition, cluster.small_partition}
    assert {n for n, _, _ in rows} == {"node1", "node2"}
    # Other areas' tests may hold a node right now; a node is idle unless a job runs on it.
    busy = cluster.ssh("login1", ["squeue", "-h", "-t", "R,CG", "-o", "%N"]).stdout
    for node, _, state in rows:
        if node in busy or "node[" in busy:
            assert state in ("mix", "alloc", "comp", "idle"), (node, state)
        else:
            assert state == "idle", (node, state)


def test_batch_job_runs_on_a_compute_node_and_names_it(cluster) -> None:
    proc = submit(cluster, "--output", "bench-%j.out", "--wrap", "hostname")
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.strip().split(";")[0]
    info = wait_job_done(cluster, job_id)
    assert info["JobState"] == "COMPLETED", info
    out = cluster.home() / f"bench-{job_id}.out"
    try:
        ran_on = out.read_text().strip()
        assert ran_on in ("node1", "node2")
        assert ran_on == info["NodeList"]
        assert out.stat().st_uid == cluster.home().stat().st_uid  # written as the user
    finally:
        out.unlink(missing_ok=True)


def test_small_partition_runs_on_its_node_and_enforces_its_time_limit(cluster) -> None:
    too_long = submit(cluster, "-p", cluster.small_partition,
                      "-t", str(cluster.small_partition_maxtime_min + 5), "--wrap", "true")
    assert too_long.returncode != 0
    assert "time limit" in too_long.stderr.lower()
    ok = submit(cluster, "-p", cluster.small_partition, "-t", "1",
                "--output", "/dev/null", "--wrap", "true")
    assert ok.returncode == 0, ok.stderr
    info = wait_job_done(cluster, ok.stdout.strip())
    assert info["JobState"] == "COMPLETED"
    assert info["NodeList"] in cluster.small_partition_nodes


# -- network isolation --------------------------------------------------------------------

def connect_errno(addr: str, port: int = 22) -> int:
    """0 if a TCP connect from the laptop succeeds, else the errno (timeout -> ETIMEDOUT)."""
    with socket.socket() as sock:
        sock.settimeout(5)
        try:
            sock.connect((addr, port))
        except socket.timeout:
            return errno.ETIMEDOUT
        except OSError as exc:
            return exc.errno or -1
    return 0


@pytest.mark.parametrize("node", ["node1", "node2"])
def test_laptop_has_no_route_to_compute_nodes(cluster, node: str) -> None:
    assert connect_errno(cluster.addr(node)) in (errno.EHOSTUNREACH, errno.ENETUNREACH)
    route = subprocess.run(["ip", "route", "get", cluster.addr(node)], capture_output=True,
                           text=True, timeout=10)
    assert route.returncode != 0 or "unreachable" in route.stdout


def test_laptop_reaches_login1(cluster) -> None:
    assert connect_errno(cluster.login_addr) == 0


@pytest.mark.parametrize("node", ["node1", "node2"])
def test_login1_reaches_compute_nodes(cluster, node: str) -> None:
    code = (f"import socket; s = socket.create_connection(({cluster.addr(node)!r}, 22), 5);"
            "print(s.recv(64).decode().split('-')[0])")
    proc = cluster.run_in("login1", ["python3", "-c", code])
    assert proc.stdout.strip() == "SSH", proc.stderr


def test_cluster_hosts_are_not_routers_and_have_no_default_route(cluster) -> None:
    fwd = cluster.run_in("login1", ["sysctl", "-n", "net.ipv4.ip_forward"])
    assert fwd.stdout.strip() == "0"
    for host in cluster.hosts:
        default = cluster.run_in(host, ["ip", "route", "show", "default"])
        assert default.returncode == 0 and default.stdout.strip() == ""


def test_bench_range_is_unreachable_in_the_root_namespace(cluster) -> None:
    routes = subprocess.run(["ip", "route", "show", "type", "unreachable"],
                            capture_output=True, text=True, timeout=10).stdout
    assert cluster.env["BENCH_RANGE"] in routes


# -- inside the cluster, and what the laptop keeps ---------------------------------------

def test_user_on_login1_reaches_nodes_with_the_cluster_key(cluster) -> None:
    """The classic chained forward (`ssh login1 ssh NODE`) needs in-cluster keys."""
    proc = cluster.ssh("login1", ["ssh", "-o", "BatchMode=yes", "-o",
                                  "StrictHostKeyChecking=yes", "node2", "hostname"])
    assert (proc.returncode, proc.stdout.strip()) == (0, "node2"), proc.stderr


def test_srun_spans_both_nodes(cluster) -> None:
    proc = cluster.ssh("login1", ["srun", "-N2", "-t", "1", "hostname"], timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert sorted(proc.stdout.split()) == ["node1", "node2"]


def test_laptop_global_client_config_is_untouched(cluster) -> None:
    hosts = open("/etc/hosts").read()
    assert "login1" not in hosts and "198.18." not in hosts
    root_known_hosts = os.path.expanduser("~/.ssh/known_hosts")
    if os.path.exists(root_known_hosts):
        assert cluster.login_addr not in open(root_known_hosts).read()
    for path in ("/etc/ssh/ssh_config", "/etc/ssh/ssh_known_hosts"):
        if os.path.exists(path):
            assert cluster.login_addr not in open(path).read()


LISTEN = ("import socket, sys\n"
          "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
          "print(s.getsockname()[1], flush=True); sys.stdin.read()\n")
CONNECT = ("import socket, sys\n"
           "s = socket.socket(); s.settimeout(5)\n"
           "print(s.connect_ex(('127.0.0.1', int(sys.argv[1]))))\n")


def test_each_host_has_its_own_loopback(cluster) -> None:
    """A server on node1's 127.0.0.1 is reachable there only (what the tunnels rely on)."""
    listener = subprocess.Popen(["ip", "netns", "exec", cluster.netns("node1"), "python3", "-c",
                                 LISTEN], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True)
    try:
        port = listener.stdout.readline().strip()
        assert port.isdigit()
        results = {host: cluster.run_in(host, ["python3", "-c", CONNECT, port]).stdout.strip()
                   for host in ("node1", "login1", "node2")}
        local = subprocess.run(["python3", "-c", CONNECT, port], capture_output=True,
                               text=True, timeout=30).stdout.strip()
    finally:
        listener.kill()
        listener.wait(timeout=10)
    assert results["node1"] == "0"
    assert results["login1"] == results["node2"] == str(errno.ECONNREFUSED)
    assert local == str(errno.ECONNREFUSED)


def test_daemons_do_not_hold_the_directory_up_ran_from(cluster) -> None:
    """Jobs start in slurmd's cwd first: it must be "/", not a test's temporary dir."""
    pidfiles = sorted((cluster.dir / "state" / "run").glob("bench-*.pid"))
    assert len(pidfiles) >= 6
    for pidfile in pidfiles:
        pid = pidfile.read_text().strip()
        assert os.readlink(f"/proc/{pid}/cwd") == "/", pidfile.name
