"""The SSH layer on the mini cluster: login1, ProxyJump to nodes, chained connections,
host key policy with the cluster's real sshd keys."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from fireflyhpc.errors import RemoteCommandError, SSHError
from fireflyhpc.ssh import CallbackPrompter, ChannelOpenError, SSHConnection
from ssh_testutil import run_concurrently

pytestmark = pytest.mark.cluster

HOSTILE = ["a'; echo foo", "$(id)", "`id`", "x\ny", "back\\slash", "*", "-n", "", "$HOME",
           "é"]


def connect(cluster, host: str, config: Path | None = None, **kwargs) -> SSHConnection:
    kwargs.setdefault("prompter", CallbackPrompter())  # the bench needs no human answers
    return SSHConnection.open(host, ssh_config=str(config or cluster.ssh_config), **kwargs)


def config_with_known_hosts(cluster, tmp_path: Path, known_hosts: str) -> Path:
    """A copy of the bench's ssh_config whose hosts use a known_hosts file of ours."""
    kh = tmp_path / "known_hosts"
    kh.write_text(known_hosts)
    config = tmp_path / "ssh_config"
    config.write_text(cluster.ssh_config.read_text().replace(str(cluster.known_hosts), str(kh)))
    return config


def fingerprint_of(line: str, tmp_path: Path) -> str:
    pub = tmp_path / "key.pub"
    pub.write_text(" ".join(line.split()[1:3]) + "\n")
    out = subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True,
                         check=True).stdout
    return out.split()[1]


def test_login_commands_and_failures(cluster) -> None:
    with connect(cluster, "login1") as login:
        assert login.run(["hostname"]).stdout.strip() == "login1"
        assert login.run(["whoami"]).stdout.strip() == cluster.user
        with pytest.raises(RemoteCommandError) as info:
            login.run(["ls", "/no/such/dir"])
        error = info.value
        assert error.exit_code == 2 and error.host == "login1"
        assert "No such file or directory" in str(error) and "ls /no/such/dir" in str(error)


def test_proxyjump_to_node_with_hostile_argv(cluster) -> None:
    with connect(cluster, "node1") as node:
        assert len(node.transports) == 2
        assert node.run(["hostname"]).stdout.strip() == "node1"
        assert node.run(["printf", "%s\\0", *HOSTILE]).stdout.split("\0")[:-1] == HOSTILE


def test_chained_connections_share_the_login_transport(cluster) -> None:
    with connect(cluster, "login1") as login:
        login_transport = login.transport
        node2 = login.connect_to("node2")
        node1 = login.connect_to("node1")
        assert node2.run(["hostname"]).stdout.strip() == "node2"
        assert node1.run(["hostname"]).stdout.strip() == "node1"
        assert login.transport is login_transport and len(login.transports) == 1
        assert node1.run(["true"]).exit_code == 0  # a fresh channel on the chained path
        node1.close()
        assert not node1.is_active() and login.is_active() and node2.is_active()
        node2.reconnect()  # a new session into the node, still through the same login
        assert node2.run(["hostname"]).stdout.strip() == "node2"
        assert login.transport is login_transport
        login.reconnect()  # takes node2 down with it
        assert login.transport is not login_transport and not node2.is_active()
        node2 = login.connect_to("node2")
    assert not node2.is_active() and not login.is_active()


def test_concurrent_commands_on_one_connection(cluster) -> None:
    # 8 threads each running 10 short commands: their quick exits race our EOF against
    # sshd's CLOSE, which once made sshd drop the whole connection.
    with connect(cluster, "node1") as node:
        results, errors = run_concurrently(
            node, [[["echo", f"{i}-{r}"] for r in range(10)] for i in range(8)])
    assert not errors, errors
    assert sorted(results) == sorted(f"{i}-{r}\n" for i in range(8) for r in range(10))


def test_channel_to_closed_port_on_node(cluster) -> None:
    with connect(cluster, "login1") as login:
        with pytest.raises(ChannelOpenError) as info:
            login.open_channel_to(cluster.addr("node1"), 1)
        assert info.value.code == 2
        assert str(info.value) == (f"login1 could not connect to {cluster.addr('node1')} port 1: "
                                   "Connection refused")
        assert login.run(["true"]).ok  # the connection survives a refused channel


def test_unknown_login_key_refused_then_accepted(cluster, tmp_path: Path) -> None:
    known = cluster.known_hosts.read_text().splitlines()
    login_line = next(line for line in known if line.split()[0].split(",")[0] == "login1")
    config = config_with_known_hosts(cluster, tmp_path, "")
    with pytest.raises(SSHError) as info:
        connect(cluster, "login1", config)
    message = str(info.value)
    assert fingerprint_of(login_line, tmp_path) in message
    assert "--accept-new-host-key" in message and "not known" in message
    with connect(cluster, "login1", config, accept_new_host_key=True) as login:
        assert login.run(["hostname"]).stdout.strip() == "login1"
    written = (tmp_path / "known_hosts").read_text().split()
    assert written == [cluster.login_addr] + login_line.split()[1:3]
    ssh = subprocess.run(["ssh", "-F", str(config), "-o", "BatchMode=yes", "login1", "true"],
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert ssh.returncode == 0, ssh.stderr


def test_unknown_node_key_behind_the_hop(cluster, tmp_path: Path) -> None:
    known = cluster.known_hosts.read_text().splitlines()
    only_login = "\n".join(line for line in known if "login1" in line.split()[0]) + "\n"
    config = config_with_known_hosts(cluster, tmp_path, only_login)
    with pytest.raises(SSHError, match=r"node1 \(198\.18\.1\.3\) is not known"):
        connect(cluster, "node1", config)


def test_changed_login_key_refused(cluster, tmp_path: Path) -> None:
    known = cluster.known_hosts.read_text().splitlines()
    node_key = next(line for line in known if "node1" in line.split()[0]).split()[1:3]
    config = config_with_known_hosts(cluster, tmp_path,
                                     f"{cluster.login_addr} {' '.join(node_key)}\n")
    for accept in (False, True):
        with pytest.raises(SSHError) as info:
            connect(cluster, "login1", config, accept_new_host_key=accept)
        assert "HOST KEY CHANGED" in str(info.value)
        assert "man-in-the-middle" in str(info.value)
        assert f"{tmp_path / 'known_hosts'} line 1" in str(info.value)


def test_other_users_key_cannot_log_in_as_user(cluster, tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(cluster.ssh_config.read_text().replace(
        str(cluster.key(cluster.user)), str(cluster.key(cluster.other_user))))
    with pytest.raises(SSHError, match="authentication failed"):
        connect(cluster, "login1", config)


def test_node_missing_from_ssh_config_uses_login_account(cluster, tmp_path: Path) -> None:
    """Reach node2 by its address, which no Host block of the config names."""
    with connect(cluster, "login1") as login:
        node = login.connect_to(cluster.addr("node2"))
        assert node.spec.user == cluster.user
        assert node.spec.known_hosts_files == (str(cluster.known_hosts),)
        assert node.run(["hostname"]).stdout.strip() == "node2"
