"""Golden tests of ssh_config resolution: pure, no network, never the real ~/.ssh/config."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from fireflyhpc.errors import ConfigError
from fireflyhpc.hostspec import host_spec
from fireflyhpc.ssh.config import (GLOBAL_KNOWN_HOSTS, HostSpec, config_path, parse_config_text,
                                   read_config, resolve_host)

GOLDEN = Path(__file__).resolve().parent / "golden"
HOME = "/home/tester"


@pytest.fixture
def config(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HOME", HOME)
    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.setenv(name, "localme")
    text = (GOLDEN / "ssh_config").read_text()
    return parse_config_text(text, base_dir=GOLDEN)


def test_alias_with_every_option(config) -> None:
    spec = resolve_host(config, "cluster")
    assert spec == HostSpec(
        alias="cluster", hostname="login.example.org", port=2222, user="alice",
        identity_files=(f"{HOME}/.ssh/id_cluster", f"{HOME}/.ssh/id_alice_login.example.org"),
        identities_only=True,
        known_hosts_files=(f"{HOME}/.ssh/kh_cluster", f"{HOME}/.ssh/kh two"),
        global_known_hosts_files=GLOBAL_KNOWN_HOSTS,
        strict_host_key_checking="accept-new", connect_timeout=7.0,
        server_alive_interval=15, server_alive_count_max=5,
        password_authentication=False, proxy_jump=())
    assert spec.known_hosts_name == "[login.example.org]:2222"
    assert spec.label == "alice@cluster (login.example.org) port 2222"


def test_pattern_host_jumps_through_alias(config) -> None:
    spec = resolve_host(config, "gpu7")
    assert (spec.hostname, spec.user, spec.port) == ("gpu7", "bob", 22)
    assert spec.identity_files == tuple(f"{HOME}/.ssh/{n}" for n in ("id_rsa", "id_ecdsa",
                                                                      "id_ed25519"))
    assert spec.known_hosts_files == (f"{HOME}/.ssh/known_hosts", f"{HOME}/.ssh/known_hosts2")
    assert [hop.alias for hop in spec.proxy_jump] == ["cluster"]
    assert spec.proxy_jump[0] == resolve_host(config, "cluster")
    assert spec.known_hosts_name == "gpu7"


def test_negated_pattern_is_not_matched(config) -> None:
    spec = resolve_host(config, "gpu-direct")
    assert (spec.hostname, spec.user, spec.proxy_jump) == ("10.1.2.3", "fallback", ())


def test_multi_hop_proxyjump_with_user_and_port(config) -> None:
    spec = resolve_host(config, "deep")
    hops = [(h.alias, h.hostname, h.user, h.port, h.hash_known_hosts) for h in spec.proxy_jump]
    assert hops == [("bastion", "bastion.example.org", "carol", 2200, True),
                    ("cluster", "login.example.org", "alice", 2222, False)]
    assert all(h.proxy_jump == () for h in spec.proxy_jump)


def test_destination_forms_override_config(config) -> None:
    spec = resolve_host(config, "eve@cluster:2300")
    assert (spec.user, spec.port, spec.hostname) == ("eve", 2300, "login.example.org")
    spec = resolve_host(config, "ssh://[::1]:2201")
    assert (spec.hostname, spec.port, spec.user) == ("::1", 2201, "fallback")
    assert spec.known_hosts_name == "[::1]:2201"


def test_unknown_host_falls_back_to_defaults(config) -> None:
    spec = resolve_host(config, "plain.example.net")
    assert spec == dataclasses.replace(
        spec, hostname="plain.example.net", port=22, user="fallback",
        strict_host_key_checking="ask", identities_only=False, connect_timeout=None,
        server_alive_count_max=5, password_authentication=False, proxy_jump=())


def test_flags_none_values_and_preferred_methods(config) -> None:
    spec = resolve_host(config, "nojump")
    assert spec.proxy_jump == ()
    assert spec.strict_host_key_checking == "no"
    assert spec.batch_mode is True
    assert spec.preferred_authentications == ("keyboard-interactive", "publickey")


def test_include_is_inlined(config) -> None:
    spec = resolve_host(config, "included")
    assert (spec.hostname, spec.port, spec.user) == ("included.example.org", 2022, "fallback")


def test_match_user(monkeypatch: pytest.MonkeyPatch, config) -> None:
    spec = resolve_host(config, "dave@somewhere")
    # The Match is evaluated with the config's user ("fallback"), as paramiko does it;
    # a User set in the config itself is what Match user sees.
    assert f"{HOME}/.ssh/id_dave" not in spec.identity_files
    cfg = parse_config_text("Host x\n  User dave\nMatch user dave\n  IdentityFile ~/.ssh/id_dave\n")
    assert resolve_host(cfg, "x").identity_files == (f"{HOME}/.ssh/id_dave",)


_RESOLVE = """
import sys
from fireflyhpc.ssh.config import read_config, resolve_host
spec = resolve_host(read_config(sys.argv[1]), sys.argv[2])
print(spec.hostname, spec.port)
"""


def test_match_exec_runs_the_command(tmp_path: Path) -> None:
    """`Match exec` runs its command (through invoke, which paramiko needs for it): the
    block applies when the command exits 0, with %h replaced by the host. Run as the
    CLI runs, in a process of its own (invoke mirrors the process's stdin)."""
    flag = tmp_path / "on-vpn"
    config = tmp_path / "ssh_config"
    config.write_text(f'Match exec "test -e {flag} && test %h = cluster"\n'
                      "  HostName inside.example.org\n  Port 2022\n"
                      "Host *\n  HostName outside.example.org\n")

    def resolve(alias: str) -> str:
        return subprocess.run([sys.executable, "-c", _RESOLVE, str(config), alias],
                              capture_output=True, text=True, check=True, timeout=60,
                              stdin=subprocess.DEVNULL).stdout.strip()

    assert resolve("cluster") == "outside.example.org 22"
    flag.touch()
    assert resolve("cluster") == "inside.example.org 2022"
    assert resolve("other") == "outside.example.org 22"


def test_proxyjump_loop_is_an_error(config) -> None:
    with pytest.raises(ConfigError, match="ProxyJump loop"):
        resolve_host(config, "loop1")


@pytest.mark.parametrize("text, message", [
    ("Host a\n  Port abc\n", "SSH config: Port for a = 'abc': expected a TCP port"),
    ("Host a\n  Port 70000\n", "from 1 to 65535"),
    ("Host a\n  StrictHostKeyChecking maybe\n", "StrictHostKeyChecking"),
    ("Host a\n  ConnectTimeout soon\n", "connecttimeout"),
    ("Host a\n  ProxyJump b,,c\n", "empty hop"),
])
def test_bad_values_are_config_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_host(parse_config_text(text), "a")


@pytest.mark.parametrize("target, expected", [
    ("host", (None, "host", None)),
    ("u@host", ("u", "host", None)),
    ("u@host:2", ("u", "host", 2)),
    ("ssh://u@h:22", ("u", "h", 22)),
    ("[fe80::1]:2022", (None, "fe80::1", 2022)),
    ("fe80::1", (None, "fe80::1", None)),
])
def test_destinations_split_by_the_one_host_spec_parser(target: str, expected: tuple) -> None:
    given = host_spec(target)
    assert (given.user, given.host, given.port) == expected


@pytest.mark.parametrize("target", ["", "u@", "host:0", "host:abc", "a b"])
def test_bad_destinations_are_refused(config, target: str) -> None:
    with pytest.raises(ConfigError):
        resolve_host(config, target)


def test_config_path_choice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert config_path(None) is None
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "config").write_text("Host x\n")
    assert config_path(None) == tmp_path / ".ssh" / "config"
    with pytest.raises(ConfigError, match="not found"):
        config_path(tmp_path / "missing")
    explicit = tmp_path / "other"
    explicit.write_text("Host y\n  HostName why\n")
    assert config_path(str(explicit)) == explicit
    assert resolve_host(read_config(explicit), "y").hostname == "why"


def test_unparsable_config_is_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_text("Host a\n  ===\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        read_config(bad)


def test_node_inherits_what_its_config_does_not_set(config) -> None:
    login = resolve_host(config, "cluster")
    node = resolve_host(config, "c123", inherit=login)
    assert (node.hostname, node.port, node.proxy_jump) == ("c123", 22, ())
    assert node.user == "fallback"  # `Host *` sets User: the config wins
    assert node.identity_files == login.identity_files and node.identities_only
    assert node.known_hosts_files == login.known_hosts_files
    assert node.strict_host_key_checking == "accept-new" and node.connect_timeout == 7.0
    assert node.password_authentication is False  # `Host *` again
    cfg = parse_config_text("Host login\n  User alice\n  IdentityFile ~/k\n")
    node = resolve_host(cfg, "c9", inherit=resolve_host(cfg, "login"))
    assert (node.user, node.identity_files) == ("alice", (f"{HOME}/k",))
    assert resolve_host(cfg, "bob@c9", inherit=resolve_host(cfg, "login")).user == "bob"


def test_include_inside_a_host_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "inc.conf").write_text("Port 2200\nHost extra\n  HostName extra.example\n")
    main = tmp_path / "config"
    main.write_text(f"Host a\n  Include {tmp_path}/inc.conf\n  User x\nHost b\n  User y\n"
                    "Include missing-*.conf\n")
    config = read_config(main)
    assert (resolve_host(config, "a").port, resolve_host(config, "a").user) == (2200, "x")
    assert (resolve_host(config, "b").port, resolve_host(config, "b").user) == (22, "y")
    assert resolve_host(config, "extra").hostname == "extra.example"
    main.write_text(f"Include {main}\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        read_config(main)
