"""The mini cluster's shape and the text of every file the bench writes.

Everything here is pure: a :class:`Layout` says where things live and which
addresses, names and users the bench uses; the ``render_*`` functions turn it into
file contents (slurm.conf, sshd_config, the client's ssh_config, hosts, env).
The side effects live in ``minicluster_ops``.
"""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path

# Everything the bench uses sits in 198.18.0.0/15 (RFC 2544, benchmarking).
BENCH_RANGE = "198.18.0.0/15"
MARKER = "# written by tests/cluster/minicluster; removed by `minicluster down`"


@dataclasses.dataclass(frozen=True)
class Host:
    """One cluster host: a network namespace with its own hostname."""

    name: str  # hostname, and the name used in ssh_config
    netns: str  # network namespace name
    addr: str  # the address the laptop (login1) or login1 (nodes) uses


@dataclasses.dataclass(frozen=True)
class Link:
    """A veth pair between two namespaces (None = the root namespace, the laptop)."""

    left_ns: str | None
    left_dev: str
    left_addr: str
    right_ns: str
    right_dev: str
    right_addr: str
    prefix: int = 24


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where the bench lives and what it is made of."""

    dir: Path
    user: str = "ffuser"
    other_user: str = "ffother"
    space_user: str = "ffspace"  # home path with a space in it, tcsh as login shell
    default_partition: str = "debug"
    small_partition: str = "short"
    small_partition_node: str = "node2"
    small_partition_maxtime: int = 5  # minutes
    cgroup_v2: bool = False

    # -- topology ---------------------------------------------------------------
    @property
    def login(self) -> Host:
        return Host("login1", "mc-login1", "198.18.0.2")

    @property
    def nodes(self) -> tuple[Host, ...]:
        return (Host("node1", "mc-node1", "198.18.1.3"),
                Host("node2", "mc-node2", "198.18.2.3"))

    @property
    def hosts(self) -> tuple[Host, ...]:
        return (self.login, *self.nodes)

    @property
    def login_cluster_addr(self) -> str:
        """login1's address on node1's subnet: where slurmctld is reached."""
        return "198.18.1.2"

    @property
    def links(self) -> tuple[Link, ...]:
        return (
            Link(None, "mc0-laptop", "198.18.0.1", "mc-login1", "mc0-login1", "198.18.0.2"),
            Link("mc-login1", "mc1-login1", "198.18.1.2", "mc-node1", "mc1-node1", "198.18.1.3"),
            Link("mc-login1", "mc2-login1", "198.18.2.2", "mc-node2", "mc2-node2", "198.18.2.3"),
        )

    def node_gateway(self, node: Host) -> str:
        """login1's address on the node's own subnet."""
        for link in self.links:
            if link.right_ns == node.netns:
                return link.left_addr
        raise KeyError(node.name)

    @property
    def users(self) -> tuple[str, ...]:
        return (self.user, self.other_user, self.space_user)

    def home(self, user: str) -> str:
        """``user``'s home directory (shared by every host)."""
        return "/home/ff space" if user == self.space_user else f"/home/{user}"

    def login_shell(self, user: str) -> str:
        """``user``'s login shell: tcsh for the space user (as many HPC users have;
        sshd runs every command string with it), else bash."""
        return "/usr/bin/tcsh" if user == self.space_user else "/bin/bash"

    def host_suffix(self, user: str) -> str:
        """What the laptop's ssh_config appends to a host name to log in as ``user``."""
        return {self.user: "", self.other_user: "-other", self.space_user: "-space"}[user]

    @property
    def partitions(self) -> tuple[str, str]:
        return (self.default_partition, self.small_partition)

    # -- files ------------------------------------------------------------------
    @property
    def state(self) -> Path:
        """Root-only daemon state: host keys, spools, pid files, logs."""
        return self.dir / "state"

    @property
    def ssh_config(self) -> Path:
        return self.dir / "ssh_config"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    @property
    def env_file(self) -> Path:
        return self.dir / "env"

    def key(self, user: str) -> Path:
        """The laptop-side private key of ``user`` (public key: same path + .pub)."""
        return self.dir / f"id_{user}"

    def sshd_config(self, host: Host) -> Path:
        return self.state / "sshd" / f"sshd_config-{host.name}"

    def host_key(self, host: Host) -> Path:
        return self.state / "sshd" / f"ssh_host_ed25519_key-{host.name}"

    def pidfile(self, daemon: str, host: Host) -> Path:
        """Where the bench records the pid of ``daemon`` (sshd, slurmd...) on ``host``."""
        return self.state / "run" / f"bench-{daemon}-{host.name}.pid"

    @property
    def daemons(self) -> list[tuple[str, Host]]:
        """Every daemon the bench may start, as (program, host), in start order."""
        return [*(("sshd", h) for h in self.hosts), ("munged", self.login),
                ("slurmctld", self.login), *(("slurmd", n) for n in self.nodes)]

    @property
    def log_dir(self) -> Path:
        return self.state / "log"


def host_by_name(layout: Layout, name: str) -> Host:
    """The host called ``name``; raises KeyError for an unknown name."""
    for host in layout.hosts:
        if host.name == name:
            return host
    raise KeyError(name)


def render_hosts(layout: Layout) -> str:
    """/etc/hosts as every cluster namespace sees it (never the laptop's)."""
    lines = [MARKER, "127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
             f"{layout.login_cluster_addr}\t{layout.login.name}"]
    lines += [f"{node.addr}\t{node.name}" for node in layout.nodes]
    return "\n".join(lines) + "\n"


def render_slurm_conf(layout: Layout) -> str:
    """slurm.conf for one controller on login1 and one slurmd per compute node."""
    st = layout.state
    node_names = ",".join(n.name for n in layout.nodes)
    lines = [
        MARKER,
        "ClusterName=minicluster",
        f"SlurmctldHost={layout.login.name}({layout.login_cluster_addr})",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"StateSaveLocation={st}/slurmctld",
        f"SlurmdSpoolDir={st}/slurmd/%n",
        f"SlurmctldPidFile={st}/run/slurmctld.pid",
        f"SlurmdPidFile={st}/run/slurmd-%n.pid",
        f"SlurmctldLogFile={layout.log_dir}/slurmctld.log",
        f"SlurmdLogFile={layout.log_dir}/slurmd-%n.log",
        "SlurmctldPort=6817",
        "SlurmdPort=6818",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "SchedulerType=sched/backfill",
        "MpiDefault=none",
        "MailProg=/bin/true",
        "ReturnToService=2",
        # Node-to-node traffic is impossible here (login1 does not forward), so
        # messages must not be relayed through a node.
        "TreeWidth=64",
        # A job over a partition's limits is refused at submission.
        "EnforcePartLimits=ALL",
        "KillWait=5",
        "InactiveLimit=0",
        "MinJobAge=300",
        "SlurmdTimeout=60",
    ]
    lines += [f"NodeName={n.name} NodeAddr={n.addr} CPUs=2 RealMemory=2000 State=UNKNOWN"
              for n in layout.nodes]
    lines += [
        f"PartitionName={layout.default_partition} Nodes={node_names} Default=YES "
        "MaxTime=INFINITE State=UP",
        f"PartitionName={layout.small_partition} Nodes={layout.small_partition_node} "
        f"Default=NO MaxTime={layout.small_partition_maxtime} State=UP",
    ]
    return "\n".join(lines) + "\n"


def render_cgroup_conf(layout: Layout) -> str:
    """cgroup.conf naming the plugin of the host's hierarchy (v1 or v2)."""
    plugin = "cgroup/v2" if layout.cgroup_v2 else "cgroup/v1"
    return f"{MARKER}\nCgroupPlugin={plugin}\nCgroupAutomount=no\n"


def render_sshd_config(layout: Layout, host: Host) -> str:
    """One host's sshd_config: keys only, the bench users only, forwarding allowed."""
    lines = [
        MARKER,
        "Port 22",
        f"HostKey {layout.host_key(host)}",
        f"PidFile {layout.state / 'run' / f'sshd-{host.name}.pid'}",
        "AuthorizedKeysFile .ssh/authorized_keys",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "PermitRootLogin no",
        f"AllowUsers {' '.join(layout.users)}",
        "AllowTcpForwarding yes",
        "AllowStreamLocalForwarding yes",
        "PermitOpen any",
        "GatewayPorts no",
        "X11Forwarding no",
        "PrintMotd no",
        "UseDNS no",
        "MaxStartups 100:30:200",
        "MaxSessions 64",
        "LogLevel VERBOSE",
        "Subsystem sftp /usr/lib/openssh/sftp-server",
    ]
    return "\n".join(lines) + "\n"


def ssh_alias(host: str, user: str, layout: Layout) -> str:
    """The ssh_config Host name that reaches ``host`` as ``user``."""
    return host + layout.host_suffix(user)


def render_ssh_config(layout: Layout) -> str:
    """The laptop's ssh_config: login1 directly, compute nodes via ProxyJump login1."""
    blocks = [MARKER]
    for user in layout.users:
        common = [
            f"    User {user}",
            f"    IdentityFile {layout.key(user)}",
            "    IdentitiesOnly yes",
            f"    UserKnownHostsFile {layout.known_hosts}",
            "    GlobalKnownHostsFile /dev/null",
            "    StrictHostKeyChecking yes",
            "    PreferredAuthentications publickey",
            "    ConnectTimeout 10",
        ]
        login_alias = ssh_alias(layout.login.name, user, layout)
        blocks.append("\n".join([f"Host {login_alias}", f"    HostName {layout.login.addr}",
                                 *common]))
        for node in layout.nodes:
            blocks.append("\n".join([f"Host {ssh_alias(node.name, user, layout)}",
                                     f"    HostName {node.addr}",
                                     f"    ProxyJump {login_alias}", *common]))
    return "\n\n".join(blocks) + "\n"


def known_hosts_names(layout: Layout, host: Host, *, laptop: bool) -> list[str]:
    """Every name a client may look ``host`` up by, from the laptop or inside the cluster."""
    if laptop:
        return [host.name, *(ssh_alias(host.name, u, layout) for u in layout.users[1:]),
                host.addr]
    if host == layout.login:
        return [host.name, *(link.left_addr for link in layout.links[1:]), host.addr]
    return [host.name, host.addr]


def render_known_hosts(layout: Layout, pubkeys: dict[str, str], *, laptop: bool) -> str:
    """known_hosts lines for every host; ``pubkeys`` maps host name to "type base64"."""
    lines = []
    for host in layout.hosts:
        lines.append(f"{','.join(known_hosts_names(layout, host, laptop=laptop))} "
                     f"{pubkeys[host.name]}")
    return "\n".join(lines) + "\n"


def env_values(layout: Layout) -> dict[str, str]:
    """The values of the sourceable ``env`` file, in order."""
    laptop_link = layout.links[0]
    values = {
        "MINICLUSTER_DIR": str(layout.dir),
        "MINICLUSTER_SSH_CONFIG": str(layout.ssh_config),
        "MINICLUSTER_KNOWN_HOSTS": str(layout.known_hosts),
        "LOGIN_HOST": layout.login.name,
        "LOGIN_ADDR": layout.login.addr,
        "LOGIN_NETNS": layout.login.netns,
        "NODES": " ".join(n.name for n in layout.nodes),
        "CLUSTER_USER": layout.user,
        "CLUSTER_USER_KEY": str(layout.key(layout.user)),
        "OTHER_USER": layout.other_user,
        "OTHER_USER_KEY": str(layout.key(layout.other_user)),
        "OTHER_USER_HOST_SUFFIX": layout.host_suffix(layout.other_user),
        "SPACE_USER": layout.space_user,
        "SPACE_USER_KEY": str(layout.key(layout.space_user)),
        "SPACE_USER_HOME": layout.home(layout.space_user),
        "SPACE_USER_HOST_SUFFIX": layout.host_suffix(layout.space_user),
        "PARTITIONS": " ".join(layout.partitions),
        "DEFAULT_PARTITION": layout.default_partition,
        "SMALL_PARTITION": layout.small_partition,
        "SMALL_PARTITION_NODES": layout.small_partition_node,
        "SMALL_PARTITION_MAXTIME_MIN": str(layout.small_partition_maxtime),
        "LAPTOP_ADDR": laptop_link.left_addr,
        "LAPTOP_VETH": laptop_link.left_dev,
        "LOGIN_VETH": laptop_link.right_dev,
        "NETNS": " ".join(h.netns for h in layout.hosts),
        "BENCH_RANGE": BENCH_RANGE,
    }
    for node in layout.nodes:
        key = node.name.upper()
        values[f"{key}_ADDR"] = node.addr
        values[f"{key}_NETNS"] = node.netns
    return values


def render_env(layout: Layout) -> str:
    """A file that both ``sh`` (``. env``) and :func:`parse_env` read."""
    body = "\n".join(f"{k}={shlex.quote(v)}" for k, v in env_values(layout).items())
    return f"{MARKER}\n{body}\n"


def parse_env(text: str) -> dict[str, str]:
    """Read a file written by :func:`render_env` back into a dict."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        parts = shlex.split(raw)
        values[key] = parts[0] if parts else ""
    return values
