"""fireflyhpc.hostspec: the one parser of a login host as users write it and the one
host/node name check."""

from __future__ import annotations

import pytest

from fireflyhpc.errors import ConfigError
from fireflyhpc.hostspec import HostTarget, host_name, host_spec

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


# -- host names ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["node1", "cn-0042", "gpu_07", "_n", "n.example.org",
                                  "10.1.2.3", "x" * 253])
def test_host_name_accepts(name: str) -> None:
    assert host_name(name) == name


@pytest.mark.parametrize("name, reason", [
    ("", "empty"), ("a b", "' '"), ("a;b", "';'"), ("-x", "not starting with -"),
    (".x", "not starting with"), ("a..b", "letters"), ("x" * 254, "at most 253"),
    ("a:b", "':'"), ("u@h", "'@'"), ("é", "'é'"), ("n\n", "'\\\\n'"),
])
def test_host_name_rejects_and_says_why(name: str, reason: str) -> None:
    with pytest.raises(ValueError, match="expected a host name: .*" + reason):
        host_name(name)
