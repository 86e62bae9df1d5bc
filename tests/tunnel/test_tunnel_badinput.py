"""Bad input to the real `fireflyhpc tunnel` command: one line, non-zero, nothing left."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from tunnel_helpers import http_get, listening, marked_processes, run_tunnel

ERROR_LINE = re.compile(r"^fireflyhpc: error: \S.*$")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def assert_one_line_error(done: subprocess.CompletedProcess[str], *needles: str) -> str:
    lines = [line for line in done.stderr.splitlines() if "error" in line]
    assert done.returncode not in (0, None), done.stderr
    assert "Traceback" not in done.stderr
    assert len(lines) == 1 and ERROR_LINE.match(lines[0]), done.stderr
    for needle in needles:
        assert needle.lower() in lines[0].lower(), lines[0]
    assert done.stdout == "", "no URL may be printed for a tunnel that did not start"
    return lines[0]


# -- input checked before anything remote (no cluster needed) ---------------------------

@pytest.mark.parametrize("args,needle", [
    (["node1;id", "8080"], "not allowed"),
    (["$(reboot)", "8080"], "not allowed"),
    (["node 1", "8080"], "not allowed"),
    (["-oProxyCommand=x", "8080"], "node"),
    (["node1", "0"], "remote port"),
    (["node1", "65536"], "remote port"),
    (["node1", "abc"], "remote port"),
    (["node1", "8080", "--port", "65536"], "local port"),
    (["node1", "8080", "--port", "abc"], "local port"),
    (["node1", "8080", "--port", "-1"], "local port"),
    (["node1", "8080", "--login", "u@login1:0"], "login"),
    (["node1", "8080", "--login", "login 1"], "login"),
    (["node1", "8080", "--login", "-oProxyCommand=x"], "login"),
])
def test_invalid_input_is_one_line(args, needle, tmp_path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text("")
    positional, options = args[:2], args[2:]
    done = subprocess.run([sys.executable, "-m", "fireflyhpc", "--ssh-config", str(config),
                           "tunnel", "--login", "login1", *options, "--", *positional],
                          capture_output=True, text=True, timeout=60)
    assert_one_line_error(done, needle)


@pytest.mark.parametrize("options,needle", [
    ([], "no cluster chosen and no login host given"),
    (["--cluster", "nosuch"], "unknown cluster 'nosuch'"),
])
def test_no_login_host(options, needle, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("FIREFLYHPC_LOGIN", raising=False)
    monkeypatch.delenv("FIREFLYHPC_CLUSTER", raising=False)
    config = tmp_path / "ssh_config"
    config.write_text("")
    (tmp_path / "empty.toml").write_text("# no clusters\n")
    done = subprocess.run([sys.executable, "-m", "fireflyhpc", "--ssh-config", str(config),
                           "--config", str(tmp_path / "empty.toml"), "tunnel", *options,
                           "node1", "8080"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 3  # ConfigError
    assert_one_line_error(done, needle)


def test_local_port_in_use_names_the_holder(tmp_path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text("")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "fireflyhpc", "--ssh-config", str(config),
                               "tunnel", "node1", "8080", "--login", "login1", "--port",
                               str(port)], capture_output=True, text=True, timeout=60)
    line = assert_one_line_error(done, "in use", f"pid {psutil.Process().pid}")
    assert "python" in line


@pytest.mark.parametrize("backend", ["openssh", "paramiko"])
def test_unknown_login_host(backend, tmp_path) -> None:
    """A login host no one can resolve. The command runs in a network namespace of its
    own with only loopback, so the name lookup cannot send anything off this machine."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        reason = "a private network namespace needs root and unshare(1)"
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(f"CI=true but {reason}", pytrace=False)
        pytest.skip(reason)
    config = tmp_path / "ssh_config"
    config.write_text("")
    command = shlex.join([sys.executable, "-m", "fireflyhpc", "--ssh-config", str(config),
                          "--ssh", backend, "tunnel", "node1", "8080", "--login",
                          "nosuchlogin.invalid", "--port", "0"])
    done = subprocess.run(["unshare", "--net", "sh", "-c", f"ip link set lo up && {command}"],
                          capture_output=True, text=True, timeout=60)
    line = assert_one_line_error(done, "unknown host", "nosuchlogin.invalid")
    assert done.returncode == 4, line  # SSHError


# -- failures that need the cluster -----------------------------------------------------

@pytest.fixture
def config_copy(cluster, tmp_path):
    """Write a copy of the bench's ssh_config with some lines replaced."""
    def make(**replace: str) -> str:
        text = cluster.ssh_config.read_text()
        for old, new in replace.items():
            text = text.replace(old, new)
        path = tmp_path / "ssh_config"
        path.write_text(text)
        return str(path)
    return make


def check_failed_cleanly(done, port: int, *needles: str) -> None:
    assert_one_line_error(done, *needles)
    assert not listening(port), "nothing may stay listening"
    assert not marked_processes(done.mark), "nothing the command started may be left running"


BACKENDS = ["openssh", "paramiko"]


@pytest.mark.cluster
@pytest.mark.parametrize("backend", BACKENDS)
def test_unknown_node_host(cluster, backend) -> None:
    port = free_port()
    done = run_tunnel(cluster, "nosuchnode", "8080", "--login", cluster.login_host,
                      "--port", str(port), ssh=backend)
    check_failed_cleanly(done, port, "nosuchnode")


@pytest.mark.cluster
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("hop", ["ssh", "direct"])
def test_refused_remote_port(cluster, backend, hop) -> None:
    port = free_port()
    done = run_tunnel(cluster, "node1", "9", "--login", cluster.login_host, "--hop", hop,
                      "--port", str(port), ssh=backend)
    check_failed_cleanly(done, port, "nothing answers", "node1:9")


@pytest.mark.cluster
@pytest.mark.parametrize("backend", BACKENDS)
def test_wrong_key(cluster, config_copy, backend) -> None:
    config = config_copy(**{str(cluster.key()): str(cluster.key(cluster.other_user))})
    port = free_port()
    done = run_tunnel(cluster, "node1", "8080", "--login", cluster.login_host,
                      "--port", str(port), ssh=backend, ssh_config=config)
    check_failed_cleanly(done, port, "auth")


@pytest.mark.cluster
@pytest.mark.parametrize("backend", BACKENDS)
def test_unknown_host_key_refused_then_accepted(cluster, config_copy, tmp_path, start_tunnel,
                                                loop_server, backend) -> None:
    empty = tmp_path / "known_hosts_empty"
    empty.write_text("")
    config = config_copy(**{str(cluster.known_hosts): str(empty)})
    port = free_port()
    done = run_tunnel(cluster, "node1", "8080", "--login", cluster.login_host,
                      "--port", str(port), ssh=backend, ssh_config=config)
    check_failed_cleanly(done, port, "host key", "not known", "--accept-new-host-key",
                         "SHA256:")
    assert empty.read_text() == "", "a refused key must not be recorded"
    # With the flag, the keys (login1's and node1's) are recorded and the tunnel works.
    tunnel = start_tunnel("node1", str(loop_server.port), "--login", cluster.login_host,
                          "--accept-new-host-key", ssh=backend, ssh_config=config)
    assert http_get(tunnel.url, "/hello", loop_server.token)[0] == 200
    assert len(empty.read_text().splitlines()) == 2


@pytest.mark.cluster
@pytest.mark.parametrize("backend", BACKENDS)
def test_changed_host_key_refused(cluster, config_copy, tmp_path, backend) -> None:
    key = tmp_path / "impostor"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    impostor = " ".join(Path(f"{key}.pub").read_text().split()[:2])
    changed = tmp_path / "known_hosts_changed"
    changed.write_text("".join(f"{line.split()[0]} {impostor}\n"
                               for line in cluster.known_hosts.read_text().splitlines() if line))
    config = config_copy(**{str(cluster.known_hosts): str(changed)})
    port = free_port()
    done = run_tunnel(cluster, "node1", "8080", "--login", cluster.login_host,
                      "--port", str(port), "--accept-new-host-key", ssh=backend,
                      ssh_config=config)
    check_failed_cleanly(done, port, "changed")
