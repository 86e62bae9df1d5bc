"""The one-home rules of fireflyhpc.validate: the host-spec parser, the port parser,
the host-name check and the settings table that profiles and templates share."""

from __future__ import annotations

import pytest

from fireflyhpc import config as cfg
from fireflyhpc.scheduler import templates as tpl
from fireflyhpc import validate as v
from fireflyhpc.errors import ConfigError
from fireflyhpc.validate import HostTarget, host_spec

# -- host specs ----------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected, args", [
    ("login1", HostTarget("login1"), ["login1"]),
    ("my_alias", HostTarget("my_alias"), ["my_alias"]),
    ("alice@login1", HostTarget("login1", "alice"), ["alice@login1"]),
    ("login1:2222", HostTarget("login1", None, 2222), ["-p", "2222", "login1"]),
    ("alice@login1:2222", HostTarget("login1", "alice", 2222), ["-p", "2222", "alice@login1"]),
    ("a.b@hpc.example.org:22", HostTarget("hpc.example.org", "a.b", 22),
     ["-p", "22", "a.b@hpc.example.org"]),
    ("jdoe@REALM@login", HostTarget("login", "jdoe@REALM"), ["jdoe@REALM@login"]),
    ("10.0.0.5:2200", HostTarget("10.0.0.5", None, 2200), ["-p", "2200", "10.0.0.5"]),
    ("[::1]:22", HostTarget("::1", None, 22), ["-p", "22", "::1"]),
    ("u@[fe80::1%eth0]:2022", HostTarget("fe80::1%eth0", "u", 2022),
     ["-p", "2022", "u@fe80::1%eth0"]),
    ("[::1]", HostTarget("::1"), ["::1"]),
    ("fe80::1", HostTarget("fe80::1"), ["fe80::1"]),
    ("ssh://u@h:22", HostTarget("h", "u", 22), ["-p", "22", "u@h"]),
])
def test_host_spec_forms(text: str, expected: HostTarget, args: list[str]) -> None:
    target = host_spec(text)
    assert target == expected
    assert target.ssh_args() == args
    assert host_spec(str(target)) == target  # written back, it parses the same


@pytest.mark.parametrize("text", [
    "", " ", "a b", "u@", "@h", "h:", "h:0", "h:65536", "h:abc", "h:22:33x", "-oProxyCommand=x",
    "-p", "a;b", "$(id)", "`id`", "x\ny", "a..b", ".hidden", "h/x", "[::1", "[zz]:22",
    "[::1]x", "u v@h", "é", "x" * 300, "*", "h:-1",
])
def test_host_spec_rejects_junk_in_one_line(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        host_spec(text, what="--login")
    message = str(info.value)
    assert message.startswith("--login = ") and "\n" not in message
    assert "expected [user@]host[:port] or an ssh_config alias" in message


def test_host_spec_refuses_non_text() -> None:
    with pytest.raises(ConfigError, match="login = 22: expected"):
        host_spec(22, what="login")


def test_login_setting_accepts_every_form_and_keeps_it_as_written() -> None:
    for text in ("h", "u@h", "h:2222", "u@h:2222", "[::1]:22"):
        profile = cfg.parse_profile("c", {"login": text}, "<t>")
        assert cfg.resolve({}, {}, profile).login == text
        assert cfg.resolve({"login": text}, {}, None).login == text
    with pytest.raises(ConfigError, match=r"^<t>: \[clusters.c\] login = 'u@h:x': expected"):
        cfg.parse_profile("c", {"login": "u@h:x"}, "<t>")


# -- ports and host names ------------------------------------------------------------------

@pytest.mark.parametrize("value, allow_zero, expected", [
    (22, False, 22), ("22", False, 22), (" 8080 ", False, 8080), ("65535", False, 65535),
    ("0", True, 0), (0, True, 0), ("00080", False, 80),
])
def test_port_accepts(value: object, allow_zero: bool, expected: int) -> None:
    assert v.port(value, allow_zero=allow_zero) == expected


@pytest.mark.parametrize("value", [0, "0", -1, 65536, "65536", "", "abc", "1e3", "0x50", "８０",
                                   True, 22.0, None, "123456"])
def test_port_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="expected a TCP port number from 1 to 65535"):
        v.port(value)


def test_parse_port_is_a_one_line_config_error_naming_the_value() -> None:
    with pytest.raises(ConfigError, match="^remote port = 'x': expected a TCP port number "
                                          "from 1 to 65535$"):
        v.parse_port("x", what="remote port")
    assert v.parse_port("0", what="local port", allow_zero=True) == 0


@pytest.mark.parametrize("name", ["node1", "cn-0042", "gpu_07", "_n", "n.example.org",
                                  "10.1.2.3", "x" * 253])
def test_host_name_accepts(name: str) -> None:
    assert v.host_name(name) == name


@pytest.mark.parametrize("name, reason", [
    ("", "empty"), ("a b", "' '"), ("a;b", "';'"), ("-x", "not starting with -"),
    (".x", "not starting with"), ("a..b", "letters"), ("x" * 254, "at most 253"),
    ("a:b", "':'"), ("u@h", "'@'"), ("é", "'é'"), ("n\n", "'\\\\n'"),
])
def test_host_name_rejects_and_says_why(name: str, reason: str) -> None:
    with pytest.raises(ValueError, match="expected a host name: .*" + reason):
        v.host_name(name)


# -- one table for profile keys, flags and template placeholders ---------------------------

def test_profile_keys_flags_and_placeholders_share_one_table() -> None:
    tables = {**cfg.PROFILE_KEYS, **cfg.FLAG_ONLY_KEYS, **tpl.PLACEHOLDERS}
    for name, validator in tables.items():
        assert validator is v.SETTINGS[name], name
    assert set(cfg.PROFILE_KEYS) & set(tpl.PLACEHOLDERS) >= {"partition", "time", "setup",
                                                             "python", "job_name"}


def test_a_value_refused_in_a_profile_is_refused_in_a_template() -> None:
    with pytest.raises(ConfigError, match="partition = 'a;b'"):
        cfg.parse_profile("c", {"partition": "a;b"}, "<t>")
    with pytest.raises(ConfigError, match=r"\{\{ partition \}\} = 'a;b'"):
        tpl.render_template("#SBATCH -p {{ partition }}\n", {"partition": "a;b"})
    with pytest.raises(ConfigError, match=r"\[clusters.'a b'\]: expected a cluster name"):
        cfg.parse_profile("a b", {}, "<t>")
    with pytest.raises(ConfigError, match=r"\{\{ cluster \}\} = 'a b'"):
        tpl.render_template("#SBATCH --comment={{ cluster }}\n", {"cluster": "a b"})
