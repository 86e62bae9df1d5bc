"""Pure parts of the bench: the files it writes, checked without root or a cluster."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from minicluster_layout import (BENCH_RANGE, Layout, env_values, parse_env,  # noqa: E402
                                render_cgroup_conf, render_env, render_known_hosts,
                                render_slurm_conf, render_ssh_config, render_sshd_config)

LAYOUT = Layout(dir=Path("/tmp/mc test"))


def test_addresses_stay_inside_the_bench_range() -> None:
    import ipaddress
    net = ipaddress.ip_network(BENCH_RANGE)
    addrs = [a for link in LAYOUT.links for a in (link.left_addr, link.right_addr)]
    assert all(ipaddress.ip_address(a) in net for a in addrs)
    assert len(set(addrs)) == len(addrs)
    assert all(len(dev) <= 15 for link in LAYOUT.links for dev in (link.left_dev, link.right_dev))


def test_cgroup_plugin_follows_the_host_hierarchy() -> None:
    assert "CgroupPlugin=cgroup/v1" in render_cgroup_conf(LAYOUT)
    assert "CgroupPlugin=cgroup/v2" in render_cgroup_conf(Layout(dir=LAYOUT.dir, cgroup_v2=True))


def test_slurm_conf_controller_nodes_and_partitions() -> None:
    conf = render_slurm_conf(LAYOUT).splitlines()
    assert "SlurmctldHost=login1(198.18.1.2)" in conf
    assert "ReturnToService=2" in conf
    assert "NodeName=node1 NodeAddr=198.18.1.3 CPUs=2 RealMemory=2000 State=UNKNOWN" in conf
    assert "PartitionName=debug Nodes=node1,node2 Default=YES MaxTime=INFINITE State=UP" in conf
    assert "PartitionName=short Nodes=node2 Default=NO MaxTime=5 State=UP" in conf


def test_ssh_config_reaches_nodes_only_through_login1() -> None:
    text = render_ssh_config(LAYOUT)
    blocks = {b.splitlines()[0]: b for b in text.split("\n\n")[1:]}
    assert set(blocks) == {f"Host {h}{s}" for h in ("login1", "node1", "node2")
                           for s in ("", "-other", "-space")}
    assert "ProxyJump" not in blocks["Host login1"]
    assert "    ProxyJump login1\n" in blocks["Host node2"] + "\n"
    assert "    ProxyJump login1-other" in blocks["Host node1-other"]
    assert "    User ffother" in blocks["Host node1-other"]
    assert "    IdentityFile /tmp/mc test/id_ffother" in blocks["Host login1-other"]
    assert "    User ffspace" in blocks["Host node2-space"]
    assert "    ProxyJump login1-space" in blocks["Host node2-space"]


def test_sshd_allows_forwarding_and_keys_only() -> None:
    text = render_sshd_config(LAYOUT, LAYOUT.nodes[0]).splitlines()
    for line in ("AllowTcpForwarding yes", "PermitOpen any", "PasswordAuthentication no",
                 "PermitRootLogin no", "AllowUsers ffuser ffother ffspace"):
        assert line in text


def test_known_hosts_names_every_alias_and_address() -> None:
    keys = {h.name: f"ssh-ed25519 KEY{h.name}" for h in LAYOUT.hosts}
    laptop = render_known_hosts(LAYOUT, keys, laptop=True).splitlines()
    assert laptop[0] == "login1,login1-other,login1-space,198.18.0.2 ssh-ed25519 KEYlogin1"
    inside = render_known_hosts(LAYOUT, keys, laptop=False).splitlines()
    assert inside[0].startswith("login1,198.18.1.2,198.18.2.2,198.18.0.2 ")
    assert inside[2] == "node2,198.18.2.3 ssh-ed25519 KEYnode2"


def test_env_file_reads_back_the_same_in_python_and_sh() -> None:
    text = render_env(LAYOUT)
    values = parse_env(text)
    assert values == env_values(LAYOUT)
    assert values["MINICLUSTER_DIR"] == "/tmp/mc test"
    proc = subprocess.run(["sh", "-c", text + '\nprintf "%s|%s" "$MINICLUSTER_DIR" "$NODES"'],
                          capture_output=True, text=True, timeout=10)
    assert proc.stdout == "/tmp/mc test|node1 node2"


def test_a_foreign_slurm_conf_is_set_aside_and_restored(tmp_path) -> None:
    from minicluster_layout import MARKER
    from minicluster_services import install_conf, restore_conf
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=real\n")
    install_conf(conf, f"{MARKER}\nClusterName=minicluster\n")
    install_conf(conf, f"{MARKER}\nClusterName=minicluster\n")  # a second `up`
    assert (tmp_path / "slurm.conf.before-minicluster").read_text() == "ClusterName=real\n"
    restore_conf(conf)
    assert [p.name for p in tmp_path.iterdir()] == ["slurm.conf"]
    assert conf.read_text() == "ClusterName=real\n"


MINICLUSTER = Path(__file__).resolve().parent / "minicluster"


def test_minicluster_usage_errors_are_one_line_and_nonzero() -> None:
    proc = subprocess.run([str(MINICLUSTER), "bogus"], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 2
    assert "invalid choice: 'bogus'" in proc.stderr and "Traceback" not in proc.stderr


def test_minicluster_refuses_to_run_without_root() -> None:
    import os
    import shutil
    import tempfile
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        import pytest
        pytest.skip("needs root to drop to an unprivileged user")
    # A copy that user nobody can read wherever the checkout lives.
    copy = Path(tempfile.mkdtemp(prefix="minicluster-nonroot-"))
    try:
        for src in MINICLUSTER.parent.glob("minicluster*"):
            shutil.copy2(src, copy / src.name)
        os.chmod(copy, 0o755)
        proc = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                               "env", "PATH=/usr/bin:/bin", str(copy / "minicluster"), "status"],
                              capture_output=True, text=True, timeout=30)
    finally:
        shutil.rmtree(copy)
    assert (proc.returncode, proc.stdout.strip()) == (
        1, "minicluster: must run as root (it creates network namespaces and users)"), proc.stderr
