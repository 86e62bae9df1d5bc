"""Test setup shared by every area: markers, skip rules, and the mini cluster fixture.

Tests that need the mini HPC cluster carry ``@pytest.mark.cluster`` and take the
session-scoped ``cluster`` fixture. Browser tests carry ``@pytest.mark.browser``.
Run by hand without root or the Debian packages, those tests skip with a reason;
under ``CI=true`` they must run, so a missing bench is a failure.

The fixture brings the bench up once per session unless it is already up, and takes
it down at the end only if it brought it up (and ``MINICLUSTER_KEEP`` is not set).
Tests marked ``cluster_disruptive`` (they take the bench down and up again) run last.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, Sequence

import pytest

MINICLUSTER = Path(__file__).resolve().parent / "cluster" / "minicluster"
DEFAULT_DIR = "/tmp/fireflyhpc-minicluster"
CHROMIUM = "/usr/bin/chromium"
CLUSTER_COMMANDS = ("ip", "unshare", "sshd", "ssh", "ssh-keygen", "munged", "slurmctld",
                    "slurmd", "sinfo")


def in_ci() -> bool:
    """True when running under CI (``CI=true``): required tests must not skip."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "cluster: needs the mini HPC cluster (root, network namespaces, sshd, Slurm)")
    config.addinivalue_line("markers", "browser: needs a real headless Chromium")
    config.addinivalue_line(
        "markers", "cluster_disruptive: takes the mini cluster down and up again; runs last")
    config.addinivalue_line(
        "markers", "cluster_fault: breaks part of the bench for a while (the laptop link, "
        "login1's sshd) under the bench's fault lock, and repairs it")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Move the disruptive bench tests to the end of the session (order otherwise kept)."""
    items[:] = sorted(items, key=lambda i: i.get_closest_marker("cluster_disruptive") is not None)


def cluster_unavailable_reason(*, for_ci: bool) -> str | None:
    """Why the mini cluster cannot run here, or None if it can.

    Under CI only a missing root is a reason: ``minicluster up`` installs packages itself.
    """
    if os.geteuid() != 0:
        return "the mini cluster needs root (network namespaces, sshd, Slurm)"
    if for_ci:
        return None
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    missing = [c for c in CLUSTER_COMMANDS if shutil.which(c, path=path) is None]
    if missing:
        return f"the mini cluster needs {', '.join(missing)} (run tests/install-deps)"
    return None


def skip_or_fail(reason: str) -> None:
    """Skip with ``reason``, except under CI, where a required test must not skip."""
    if in_ci():
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("cluster") or item.get_closest_marker("cluster_disruptive"):
        reason = cluster_unavailable_reason(for_ci=in_ci())
        if reason:
            skip_or_fail(reason)
    if item.get_closest_marker("browser") and not os.access(CHROMIUM, os.X_OK):
        skip_or_fail(f"browser tests need {CHROMIUM} (run tests/install-deps)")


# -- the mini cluster --------------------------------------------------------------------

def read_env(path: Path) -> dict[str, str]:
    """Parse the bench's ``env`` file (KEY=shell-quoted value lines)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, _, raw = line.partition("=")
            parts = shlex.split(raw)
            values[key] = parts[0] if parts else ""
    return values


@dataclasses.dataclass(frozen=True)
class Cluster:
    """What a test needs to use the running mini cluster (read from its ``env`` file)."""

    dir: Path
    env: dict[str, str]
    minicluster: Path = MINICLUSTER

    @classmethod
    def load(cls, directory: Path) -> "Cluster":
        return cls(dir=directory, env=read_env(directory / "env"))

    # -- names --------------------------------------------------------------------------
    @property
    def ssh_config(self) -> Path:
        return Path(self.env["MINICLUSTER_SSH_CONFIG"])

    @property
    def known_hosts(self) -> Path:
        return Path(self.env["MINICLUSTER_KNOWN_HOSTS"])

    @property
    def login_host(self) -> str:
        return self.env["LOGIN_HOST"]

    @property
    def login_addr(self) -> str:
        return self.env["LOGIN_ADDR"]

    @property
    def laptop_addr(self) -> str:
        return self.env["LAPTOP_ADDR"]

    @property
    def nodes(self) -> list[str]:
        return self.env["NODES"].split()

    @property
    def hosts(self) -> list[str]:
        return [self.login_host, *self.nodes]

    def addr(self, host: str) -> str:
        """The address a client uses for ``host`` (login1: the laptop-facing one)."""
        return self.login_addr if host == self.login_host else self.env[f"{host.upper()}_ADDR"]

    def netns(self, host: str) -> str:
        """The network namespace of cluster host ``host``."""
        return self.env["LOGIN_NETNS"] if host == self.login_host \
            else self.env[f"{host.upper()}_NETNS"]

    @property
    def user(self) -> str:
        """The unprivileged user the tool runs as on the cluster."""
        return self.env["CLUSTER_USER"]

    @property
    def other_user(self) -> str:
        """Another unprivileged user (for security tests)."""
        return self.env["OTHER_USER"]

    @property
    def space_user(self) -> str:
        """A user whose home directory path has a space in it ("" on a bench made before
        it had one: `minicluster up` again)."""
        return self.env.get("SPACE_USER", "")

    def _user_env(self, user: str | None, what: str) -> str:
        user = user or self.user
        prefix = {self.user: "CLUSTER_USER", self.other_user: "OTHER_USER",
                  self.space_user: "SPACE_USER"}.get(user)
        if prefix is None:
            raise ValueError(f"no bench user {user!r}")
        return self.env.get(f"{prefix}_{what}", "")

    def key(self, user: str | None = None) -> Path:
        """The laptop-side private key of ``user`` (default: :attr:`user`)."""
        return Path(self._user_env(user, "KEY"))

    def home(self, user: str | None = None) -> Path:
        """The shared home directory of ``user`` (same path on every host)."""
        return Path(self._user_env(user, "HOME") or f"/home/{user or self.user}")

    @property
    def partitions(self) -> list[str]:
        return self.env["PARTITIONS"].split()

    @property
    def default_partition(self) -> str:
        return self.env["DEFAULT_PARTITION"]

    @property
    def small_partition(self) -> str:
        return self.env["SMALL_PARTITION"]

    @property
    def small_partition_nodes(self) -> list[str]:
        return self.env["SMALL_PARTITION_NODES"].split()

    @property
    def small_partition_maxtime_min(self) -> int:
        return int(self.env["SMALL_PARTITION_MAXTIME_MIN"])

    @property
    def laptop_veth(self) -> str:
        """The laptop<->login1 veth end in the root namespace (``ip link set X down``)."""
        return self.env["LAPTOP_VETH"]

    @property
    def login_veth(self) -> str:
        """The same link's end inside login1's namespace."""
        return self.env["LOGIN_VETH"]

    def ssh_host(self, host: str, user: str | None = None) -> str:
        """The ssh_config Host alias reaching ``host`` as ``user``."""
        return host + self._user_env(user, "HOST_SUFFIX")

    # -- commands -----------------------------------------------------------------------
    def run_in(self, host: str, argv: Sequence[str], *, timeout: float = 60,
               input: str | None = None, check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` as root inside ``host``'s network namespace (host name or netns)."""
        netns = host if host.startswith("mc-") else self.netns(host)
        return subprocess.run(["ip", "netns", "exec", netns, *argv], capture_output=True,
                              text=True, timeout=timeout, input=input, check=check,
                              stdin=None if input is not None else subprocess.DEVNULL)

    def ssh_argv(self, host: str, argv: Sequence[str] = (), *, user: str | None = None,
                 options: Sequence[str] = ()) -> list[str]:
        """The OpenSSH client command line running ``argv`` on ``host`` as ``user``."""
        remote = [shlex.join(argv)] if argv else []
        return ["ssh", "-F", str(self.ssh_config), "-o", "BatchMode=yes", *options,
                "--", self.ssh_host(host, user), *remote]

    def ssh(self, host: str, argv: Sequence[str], *, user: str | None = None,
            timeout: float = 60, input: str | None = None, check: bool = False,
            options: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` on ``host`` through the real ssh client and the bench's ssh_config."""
        return subprocess.run(self.ssh_argv(host, argv, user=user, options=options),
                              capture_output=True, text=True, timeout=timeout, input=input,
                              check=check,
                              stdin=None if input is not None else subprocess.DEVNULL)

    def status(self) -> subprocess.CompletedProcess[str]:
        """``minicluster status`` (exit 0 when fully up, 1 partly, 3 nothing runs)."""
        return bench_command("status")

    def other_sessions(self) -> list[int]:
        """Pids of other test sessions on this machine that use the bench right now."""
        return other_live_sessions()

    def minicluster_command(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``minicluster ARGS...`` (up/down/status) with this bench's directory."""
        return bench_command(*args)

    # -- faults -------------------------------------------------------------------------
    @contextlib.contextmanager
    def link_down(self) -> Iterator[Outage]:
        """The laptop<->login1 link down for the ``with`` block (under the fault lock),
        and up again afterwards whatever happens, until login1's sshd answers. The
        :class:`Outage` it gives says when the link was up again."""
        outage = Outage()
        with fault_lock("laptop link down"):
            subprocess.run(["ip", "link", "set", self.laptop_veth, "down"], check=True,
                           timeout=30)
            try:
                yield outage
            finally:
                for _ in range(5):
                    if subprocess.run(["ip", "link", "set", self.laptop_veth, "up"],
                                      timeout=30).returncode == 0:
                        break
                    time.sleep(1)
                outage.restored = time.monotonic()
                self._wait_sshd(self.login_host)

    def restart_sshd(self, host: str, *, sessions_of: int | None = None) -> None:
        """Restart ``host``'s sshd (under the fault lock): the listener ends and a new one
        starts from the same config. With ``sessions_of`` (a pid), the sshd processes
        serving that process tree's connections to ``host`` end too, as they do when a
        login node restarts; other sessions on the bench are left alone. Returns once
        the new sshd accepts connections."""
        sys.path.insert(0, str(MINICLUSTER.parent))
        from minicluster_layout import Layout  # the bench's own code starts sshd
        from minicluster_net import kill_pids, read_pid
        from minicluster_services import start_sshd

        import psutil

        layout = Layout(dir=self.dir)
        (node,) = [h for h in layout.hosts if h.name == host]
        ports = set()
        if sessions_of is not None:
            root = psutil.Process(sessions_of)
            for proc in (root, *root.children(recursive=True)):
                with contextlib.suppress(psutil.NoSuchProcess):
                    ports |= {c.laddr.port for c in proc.net_connections(kind="tcp")
                              if c.raddr and c.raddr.ip == self.addr(host)
                              and c.raddr.port == 22}
        with fault_lock(f"sshd@{host} restarted"):
            if ports:
                self.run_in(host, [sys.executable, "-c", _KILL_SSHD_SESSIONS, *map(str, ports)],
                            check=True)
            listener = read_pid(layout.pidfile("sshd", node))
            if listener is not None:
                kill_pids([listener])
            start_sshd(layout, node)
            self._wait_sshd(host)

    def _wait_sshd(self, host: str, timeout: float = 60) -> None:
        probe = ["timeout", "5", "ssh", "-F", str(self.ssh_config), "-o", "BatchMode=yes",
                 host, "true"]
        deadline = time.monotonic() + timeout
        while subprocess.run(probe, capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                raise AssertionError(f"sshd on {host} does not answer after the fault")
            time.sleep(0.5)


@dataclasses.dataclass
class Outage:
    """A fault in progress; ``restored`` (time.monotonic) once it was repaired."""

    restored: float | None = None


# Inside a host's namespace: SIGKILL the sshd processes serving the given client ports.
_KILL_SSHD_SESSIONS = """
import os, signal, sys, psutil
ports = {int(p) for p in sys.argv[1:]}
for conn in psutil.net_connections(kind="tcp"):
    if conn.pid and conn.laddr.port == 22 and conn.raddr and conn.raddr.port in ports:
        os.kill(conn.pid, signal.SIGKILL)
"""

FAULT_LOCK = Path("/run/lock/fireflyhpc-minicluster-fault")


@contextlib.contextmanager
def fault_lock(what: str) -> Iterator[None]:
    """Hold the bench's fault lock: fault tests of every session on this machine take
    turns, and no session rebuilds the bench while a fault is on (see
    :func:`bench_is_up_or_soon`)."""
    FAULT_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(FAULT_LOCK, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        lock.truncate(0)
        lock.write(f"{os.getpid()} {what}\n")
        lock.flush()
        try:
            yield
        finally:
            lock.truncate(0)


def fault_in_progress() -> bool:
    """True while some session holds the fault lock."""
    try:
        with open(FAULT_LOCK) as lock:
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


def bench_dir() -> Path:
    return Path(os.environ.get("MINICLUSTER_DIR") or DEFAULT_DIR)


def bench_command(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run the bench executable (needs root)."""
    return subprocess.run([str(MINICLUSTER), *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


LEASES = Path("/run/lock/fireflyhpc-minicluster-sessions")


def process_start(pid: int) -> str | None:
    """The start time of process ``pid`` (tells a reused pid apart), None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def other_live_sessions() -> list[int]:
    """Pids of other live test sessions that use the bench (their lease files)."""
    pids = []
    for lease in LEASES.glob("*"):
        pid = int(lease.name) if lease.name.isdigit() else -1
        if pid == os.getpid():
            continue
        try:
            alive = process_start(pid) == lease.read_text().strip()
        except OSError:
            continue
        if alive:
            pids.append(pid)
        else:
            lease.unlink(missing_ok=True)  # a session that died without cleaning up
    return pids


def bench_is_up_or_soon(limit: float = 90) -> bool:
    """True if the bench is fully up, waiting (bounded) while other sessions use it.

    Another session may be in the middle of a fault test (a link taken down for a
    while): rebuilding the bench under it would break that test, so wait for it first.
    """
    deadline = time.monotonic() + limit
    while bench_command("status").returncode != 0:
        if fault_in_progress() and time.monotonic() < deadline + 600:
            time.sleep(2)  # a fault test repairs what it broke: never rebuild under it
            continue
        if not other_live_sessions() or time.monotonic() > deadline:
            return False
        time.sleep(2)
    return True


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """The running mini cluster, brought up once per session if it is not up yet.

    At the end the bench is taken down only if this session brought it up, no other
    test session on the machine still uses it, and ``MINICLUSTER_KEEP`` is not set.
    """
    reason = cluster_unavailable_reason(for_ci=in_ci())
    if reason:
        skip_or_fail(reason)
    LEASES.mkdir(parents=True, exist_ok=True)
    lease = LEASES / str(os.getpid())
    lease.write_text(f"{process_start(os.getpid())}\n")
    brought_up = False
    try:
        if not bench_is_up_or_soon():
            up = bench_command("up", "--reuse")
            if up.returncode != 0:
                pytest.fail(f"minicluster up failed:\n{up.stdout}{up.stderr}", pytrace=False)
            brought_up = "already up" not in up.stdout
        yield Cluster.load(bench_dir())
    finally:
        lease.unlink(missing_ok=True)
        if brought_up and not os.environ.get("MINICLUSTER_KEEP") and not other_live_sessions():
            bench_command("down")


@pytest.fixture(scope="session")
def otp_login(cluster: Cluster) -> Iterator[object]:
    """A two-factor login node next to the bench: login1 asking a one-time code after the
    key (``tests/cluster/minicluster_otp.py``), as ``login1-otp`` in its ``ssh_config``."""
    import sys

    sys.path.insert(0, str(MINICLUSTER.parent))
    from minicluster_otp import start_otp_login

    otp = start_otp_login(cluster.dir)
    try:
        yield otp
    finally:
        otp.stop()


@pytest.fixture(scope="session")
def cluster_payload_python(cluster: Cluster) -> str:
    """The bench user's payload interpreter on the cluster: a venv in their home.

    Made by ``fireflyhpc remote-install`` (wheels uploaded: the bench has no network)
    once per session; a no-op when this version is there already. It is the python
    of the bench's ``mini`` profile (``$MINICLUSTER_DIR/fireflyhpc.toml``).
    """
    from fireflyhpc.remote.install import InstallRequest, remote_install
    from fireflyhpc.ssh import SSHConnection

    with SSHConnection.open(cluster.login_host, ssh_config=str(cluster.ssh_config)) as conn:
        return remote_install(conn, InstallRequest(index="no")).python_path
