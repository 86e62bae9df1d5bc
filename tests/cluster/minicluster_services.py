"""Users, keys, sshd, munge and Slurm of the mini cluster, and what ``status`` reports."""

from __future__ import annotations

import os
import pwd
import shutil
from pathlib import Path

from minicluster_layout import (MARKER, Host, Layout, render_cgroup_conf, render_env,
                                render_known_hosts, render_slurm_conf, render_sshd_config,
                                render_ssh_config, ssh_alias)
from minicluster_net import (BenchError, as_host, in_netns, kill_pids, read_pid, run,
                             start_daemon, tcp_open, wait_for)

SLURM_CONF = Path("/etc/slurm/slurm.conf")
CGROUP_CONF = Path("/etc/slurm/cgroup.conf")
MUNGE_KEY = Path("/etc/munge/munge.key")

# binary -> Debian package that provides it
REQUIRED = {
    "ip": "iproute2", "sshd": "openssh-server", "ssh": "openssh-client",
    "ssh-keygen": "openssh-client", "munged": "munge", "munge": "munge",
    "slurmctld": "slurmctld", "slurmd": "slurmd", "sinfo": "slurm-client",
    "sbatch": "slurm-client", "unshare": "util-linux", "setpriv": "util-linux",
    "useradd": "passwd", "sysctl": "procps", "scontrol": "slurm-client", "unmunge": "munge",
    "tcsh": "tcsh",
}


def missing_packages() -> list[str]:
    """Debian packages whose binaries the bench needs but cannot find."""
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    return sorted({pkg for exe, pkg in REQUIRED.items() if not shutil.which(exe, path=path)})


def install_packages(packages: list[str]) -> None:
    """apt-get install ``packages``, non-interactively; raises BenchError if apt fails."""
    env_args = ["env", "DEBIAN_FRONTEND=noninteractive"]
    run([*env_args, "apt-get", "update", "-qq"], timeout=600)
    run([*env_args, "apt-get", "install", "-y", "-qq", "--no-install-recommends",
         *packages], timeout=1200)


# -- users and keys ---------------------------------------------------------------------

def ensure_user(name: str, home: str, shell: str) -> pwd.struct_passwd:
    """Create the unprivileged user ``name`` with home ``home`` and login shell
    ``shell`` unless it exists (the shell is set either way)."""
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        run(["useradd", "--create-home", "--home-dir", home, "--user-group", "--shell",
             shell, name])
        pw = pwd.getpwnam(name)
    if pw.pw_dir != home:
        raise BenchError(f"user {name} exists with home {pw.pw_dir}, not {home}")
    # sshd without PAM refuses a locked account ("!"); "*" means: keys only.
    run(["usermod", "-p", "*", "--shell", shell, name])
    return pwd.getpwnam(name)


def keygen(path: Path, comment: str) -> str:
    """A fresh ed25519 key pair at ``path``; returns the public key line."""
    for p in (path, path.with_name(path.name + ".pub")):
        p.unlink(missing_ok=True)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    return path.with_name(path.name + ".pub").read_text().strip()


def chown_tree(path: Path, pw: pwd.struct_passwd) -> None:
    """Give ``path`` and what lies below it to user ``pw``."""
    for root, dirs, files in os.walk(path):
        for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
            os.chown(name, pw.pw_uid, pw.pw_gid)


def setup_user(layout: Layout, name: str, cluster_known_hosts: str) -> None:
    """Keys for ``name``: one for the laptop (in the bench dir), one inside the cluster."""
    pw = ensure_user(name, layout.home(name), layout.login_shell(name))
    laptop_pub = keygen(layout.key(name), f"{name}@laptop (minicluster)")
    os.chmod(layout.key(name), 0o600)
    ssh_dir = Path(pw.pw_dir) / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    cluster_pub = keygen(ssh_dir / "id_ed25519", f"{name}@minicluster")
    (ssh_dir / "authorized_keys").write_text(f"{laptop_pub}\n{cluster_pub}\n")
    (ssh_dir / "known_hosts").write_text(cluster_known_hosts)
    os.chmod(ssh_dir, 0o700)
    chown_tree(ssh_dir, pw)
    os.chown(pw.pw_dir, pw.pw_uid, pw.pw_gid)


def host_keys(layout: Layout) -> dict[str, str]:
    """Generate every host's sshd key; returns host name -> "type base64"."""
    (layout.state / "sshd").mkdir(parents=True, exist_ok=True)
    keys = {}
    for host in layout.hosts:
        pub = keygen(layout.host_key(host), f"root@{host.name}")
        keys[host.name] = " ".join(pub.split()[:2])
    return keys


def write_client_files(layout: Layout, pubkeys: dict[str, str]) -> None:
    """The laptop's ssh_config, known_hosts and the env file, in the bench dir."""
    layout.known_hosts.write_text(render_known_hosts(layout, pubkeys, laptop=True))
    layout.ssh_config.write_text(render_ssh_config(layout))
    layout.env_file.write_text(render_env(layout))
    for path in (layout.known_hosts, layout.ssh_config, layout.env_file):
        os.chmod(path, 0o644)


# -- daemons ----------------------------------------------------------------------------

def start_sshd(layout: Layout, host: Host) -> None:
    """Start ``host``'s own sshd and wait until it accepts connections."""
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    config = layout.sshd_config(host)
    config.write_text(render_sshd_config(layout, host))
    run(["/usr/sbin/sshd", "-t", "-f", str(config)])
    start_daemon(as_host(host, ["/usr/sbin/sshd", "-D", "-e", "-f", str(config)]),
                 layout.pidfile("sshd", host),
                 layout.log_dir / f"sshd-{host.name}.log")


def wait_sshd(layout: Layout) -> None:
    """Wait until every host's sshd listens on port 22."""
    for host in layout.hosts:
        wait_for(f"sshd on {host.name}", lambda h=host: tcp_open(h.netns, h.addr, 22), 20)


def munge_works() -> bool:
    """True if a munge credential can be made and decoded (a munged serves the socket)."""
    enc = run(["munge", "-n"], check=False, timeout=10)
    if enc.returncode != 0:
        return False
    return run(["unmunge"], check=False, input=enc.stdout, timeout=10).returncode == 0


def ensure_munge_key() -> None:
    """A munge key owned by munge, mode 0400 (1024 random bytes if there was none)."""
    munge = pwd.getpwnam("munge")
    if not MUNGE_KEY.exists() or MUNGE_KEY.stat().st_size < 32:
        MUNGE_KEY.parent.mkdir(mode=0o700, exist_ok=True)
        MUNGE_KEY.write_bytes(os.urandom(1024))
    os.chown(MUNGE_KEY, munge.pw_uid, munge.pw_gid)
    os.chmod(MUNGE_KEY, 0o400)


def start_munge(layout: Layout) -> None:
    """Start munged as the munge user unless one already serves the shared socket."""
    if munge_works():
        return
    ensure_munge_key()
    munge = pwd.getpwnam("munge")
    run_dir = Path("/run/munge")
    run_dir.mkdir(mode=0o755, exist_ok=True)
    os.chown(run_dir, munge.pw_uid, munge.pw_gid)
    argv = ["setpriv", "--reuid", "munge", "--regid", "munge", "--init-groups", "--",
            "/usr/sbin/munged", "-F", "--force"]
    # On login1 with its hostname, so credentials name a resolvable origin.
    start_daemon(as_host(layout.login, argv), layout.pidfile("munged", layout.login),
                 layout.log_dir / "munged.out")
    wait_for("munged", munge_works, 20)


def backup_path(conf: Path) -> Path:
    return conf.with_name(conf.name + ".before-minicluster")


def install_conf(conf: Path, text: str) -> None:
    """Write a Slurm config file, first setting aside one the bench did not write."""
    if conf.exists() and not conf.read_text().startswith(MARKER) \
            and not backup_path(conf).exists():
        conf.rename(backup_path(conf))
    conf.write_text(text)


def restore_conf(conf: Path) -> None:
    """Remove the bench's config file and put back what was there before."""
    if conf.exists() and conf.read_text().startswith(MARKER):
        conf.unlink()
    if backup_path(conf).exists() and not conf.exists():
        backup_path(conf).rename(conf)


def start_slurm(layout: Layout) -> None:
    """Write slurm.conf, start slurmctld on login1 and slurmd on every compute node."""
    for sub in ("slurmctld", "slurmd"):
        (layout.state / sub).mkdir(parents=True, exist_ok=True)
    SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
    install_conf(SLURM_CONF, render_slurm_conf(layout))
    install_conf(CGROUP_CONF, render_cgroup_conf(layout))
    start_daemon(as_host(layout.login, ["/usr/sbin/slurmctld", "-D", "-i"]),
                 layout.pidfile("slurmctld", layout.login),
                 layout.log_dir / "slurmctld.out")
    wait_for("slurmctld", lambda: run(in_netns(layout.login.netns, ["scontrol", "ping"]),
                                      check=False).returncode == 0, 30)
    for node in layout.nodes:
        start_daemon(as_host(node, ["/usr/sbin/slurmd", "-D", "-N", node.name]),
                     layout.pidfile("slurmd", node),
                     layout.log_dir / f"slurmd-{node.name}.out")


def node_states(layout: Layout) -> dict[str, str]:
    """Node name -> Slurm state as sinfo on login1 reports it ({} if it cannot)."""
    proc = run(in_netns(layout.login.netns, ["sinfo", "-h", "-N", "-o", "%N %t"]),
               check=False, timeout=20)
    if proc.returncode != 0:
        return {}
    return dict(line.split(None, 1) for line in proc.stdout.splitlines() if " " in line)


def wait_nodes_idle(layout: Layout, timeout: float = 90) -> None:
    """Wait until sinfo shows every compute node idle."""
    def idle() -> bool:
        states = node_states(layout)
        return all(states.get(n.name) == "idle" for n in layout.nodes)
    wait_for("every compute node idle in sinfo", idle, timeout, interval=0.5)


def check_ssh(layout: Layout) -> None:
    """Log in to every host as every bench user, exactly as a client would."""
    for user in layout.users:
        for host in layout.hosts:
            alias = ssh_alias(host.name, user, layout)
            out = run(["ssh", "-F", str(layout.ssh_config), "-o", "BatchMode=yes", alias,
                       "hostname"], timeout=30).stdout.strip()
            if out != host.name:
                raise BenchError(f"ssh {alias} hostname printed {out!r}, not {host.name!r}")


# -- teardown ---------------------------------------------------------------------------

def stop_daemons(layout: Layout) -> None:
    """Stop every daemon the bench recorded a pid for (namespaces are handled elsewhere)."""
    pids = [pid for daemon, host in layout.daemons
            if (pid := read_pid(layout.pidfile(daemon, host))) is not None]
    if pids:
        kill_pids(pids)


def remove_files(layout: Layout) -> None:
    """Remove every file the bench wrote, keeping what others put in the bench dir."""
    for conf in (SLURM_CONF, CGROUP_CONF):
        restore_conf(conf)
    shutil.rmtree(layout.state, ignore_errors=True)
    for user in layout.users:
        for path in (layout.key(user), layout.key(user).with_name(f"id_{user}.pub")):
            path.unlink(missing_ok=True)
    for path in (layout.ssh_config, layout.known_hosts, layout.env_file):
        path.unlink(missing_ok=True)
    # Run folders are named after Slurm job ids, which a new bench hands out from 1
    # again: an old run's folder would pass for a new job's.
    for user in layout.users:
        shutil.rmtree(Path(layout.home(user)) / ".fireflyhpc" / "run", ignore_errors=True)


def component_pids(layout: Layout) -> dict[str, int | None]:
    """What ``status`` lists: "daemon@host" -> its live pid (None if not running).

    munged is left out: a munged the bench did not start may serve the machine.
    """
    return {f"{daemon}@{host.name}": read_pid(layout.pidfile(daemon, host))
            for daemon, host in layout.daemons if daemon != "munged"}
