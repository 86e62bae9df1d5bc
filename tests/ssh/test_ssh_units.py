"""Pure pieces: command quoting, known_hosts matching, fingerprints, cipher order."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import paramiko
import pytest

from fireflyhpc.errors import SSHError
from fireflyhpc.ssh.config import HostSpec
from fireflyhpc.ssh.wire import PREFERRED_CIPHERS, prefer
from fireflyhpc.ssh.hostkeys import HostKeyChecker, fingerprint, known_keys
from fireflyhpc.ssh.remote import build_command, posix_command

ED_B64 = "AAAAC3NzaC1lZDI1NTE5AAAAIIgFLw6/pjeEdO0UX3plnayamcugy+O/Org4IHwhVfGK"


@pytest.mark.parametrize("argv, env, expected", [
    (["echo", "hi"], None, "echo hi"),
    (["printf", "%s", "a'; echo foo"], None, "printf %s 'a'\"'\"'; echo foo'"),
    (["echo", "$(id)", "x\ny"], None, "echo '$(id)' 'x\ny'"),
    (["run"], {"A": "1 2", "B_C": ""}, "env 'A=1 2' B_C= run"),
])
def test_posix_command_golden(argv, env, expected) -> None:
    command = posix_command(argv, env)
    assert command == expected
    prefix = ["env", *(f"{k}={v}" for k, v in env.items())] if env else []
    assert shlex.split(command) == prefix + argv


def test_build_command_sends_plain_text_where_every_shell_reads_it_alike() -> None:
    plain = ["squeue", "-o", "%i|%T|%N", "-j", "4", "$(id)", "a'b", "é"]
    assert build_command(plain) == posix_command(plain)
    for word in ("x\ny", "!bang", "back\\slash", "cr\r"):
        wrapped = build_command(["echo", word])
        assert wrapped.startswith("exec sh -c 'eval \"$(echo ") and wrapped.endswith(
            " | base64 -d)\"'")
        assert "\n" not in wrapped and "!" not in wrapped and "\\" not in wrapped


HOSTILE = ["a'; echo foo", "$(id)", "`id`", "x\ny", "\\", "back\\slash", "*", "", "!x", "~",
           "$HOME", '"dq"', "tab\there", "é ü", "{a,b}", "%1", "=x", "a\\'b", "\\n"]
LOGIN_SHELLS = ["sh", "dash", "bash", "zsh", "ksh", "fish", "tcsh", "csh"]


@pytest.mark.parametrize("shell", LOGIN_SHELLS)
def test_build_command_through_every_login_shell(shell: str) -> None:
    """sshd runs the command with the user's login shell: ``SHELL -c COMMAND``."""
    path = shutil.which(shell)
    assert path is not None, f"{shell} is not installed (tests/install-deps installs it)"
    for argv, env in ((["printf", "%s\\0", *HOSTILE], None),
                      (["printf", "%s\\0", "plain", "a'b", "$(id)"], None),
                      (["sh", "-c", 'printf "%s\\0" "$A" "$B"'], {"A": "x\ny!", "B": "$(id)"})):
        out = subprocess.run([path, "-c", build_command(argv, env)], capture_output=True,
                             text=True, timeout=30, env={"PATH": "/usr/bin:/bin", "HOME": "/"})
        expected = argv[2:] if env is None else list(env.values())
        assert out.stdout.split("\0")[:-1] == expected, (shell, out.stderr)


@pytest.mark.parametrize("argv, env", [([], None), ("echo hi", None), (["echo", 1], None),
                                       (["x"], {"1BAD": "v"}), (["x"], {"A B": "v"})])
def test_build_command_rejects(argv, env) -> None:
    with pytest.raises(ValueError):
        build_command(argv, env)


def test_known_hosts_matching(tmp_path: Path) -> None:
    hashed = paramiko.HostKeys.hash_host("[h.example]:2222")
    kh = tmp_path / "kh"
    kh.write_text("\n".join([
        "# comment",
        "",
        f"login1,198.18.0.2 ssh-ed25519 {ED_B64}",
        f"*.example,!bad.example ssh-ed25519 {ED_B64}",
        f"{hashed} ssh-ed25519 {ED_B64}",
        f"@revoked [h.example]:2222 ssh-ed25519 {ED_B64}",
        f"@cert-authority *.example ssh-ed25519 {ED_B64}",
        "garbage",
        f"[login1]:2222 ssh-rsa {ED_B64}",
    ]) + "\n")
    def lines(name: str) -> list[tuple[int, bool, bool]]:
        return [(k.line, k.revoked, k.cert_authority)
                for k in known_keys((str(kh), "/nonexistent"), name)]

    assert lines("login1") == [(3, False, False)]
    assert lines("LOGIN1") == [(3, False, False)]  # host names are case-insensitive
    assert lines("198.18.0.2") == [(3, False, False)]
    assert lines("a.example") == [(4, False, False), (7, False, True)]
    assert lines("bad.example") == [(7, False, True)]  # the negation is on line 4 only
    assert lines("[h.example]:2222") == [(5, False, False), (6, True, False)]
    assert lines("[login1]:2222") == [(9, False, False)]
    assert lines("login") == []


def test_host_key_alias_is_looked_up_alone_whatever_the_port(tmp_path: Path) -> None:
    """OpenSSH looks up a HostKeyAlias as it is, not as ``[alias]:port`` (the mini
    cluster notes confirm it with ssh itself); a CA line never matches a plain key."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "hk")],
                   check=True)
    key = paramiko.PKey.from_path(tmp_path / "hk")
    kh = tmp_path / "kh"
    kh.write_text(f"@cert-authority [login.example]:2222 {key.get_name()} {key.get_base64()}\n"
                  f"myalias {key.get_name()} {key.get_base64()}\n")
    spec = HostSpec(alias="login", hostname="login.example", port=2222, host_key_alias="myalias",
                    known_hosts_files=(str(kh),), global_known_hosts_files=())
    assert spec.known_hosts_name == "myalias"
    HostKeyChecker().check(spec, key)  # found: no error
    plain = HostSpec(alias="login", hostname="login.example", port=2222,
                     known_hosts_files=(str(kh),), global_known_hosts_files=())
    assert plain.known_hosts_name == "[login.example]:2222"
    with pytest.raises(SSHError, match="not known"):
        HostKeyChecker().check(plain, key)  # only the CA line names it: not a key of it
    recorded = HostSpec(alias="n", hostname="n.example", port=2200, host_key_alias="n-alias",
                        known_hosts_files=(str(tmp_path / "kh2"),), global_known_hosts_files=())
    HostKeyChecker(accept_new=True).check(recorded, key)
    assert (tmp_path / "kh2").read_text().split()[0] == "n-alias"


def test_preferred_key_types_put_known_types_first(tmp_path: Path) -> None:
    kh = tmp_path / "kh"
    kh.write_text(f"h ssh-rsa {ED_B64}\n")
    spec = HostSpec(alias="h", hostname="h", known_hosts_files=(str(kh),),
                    global_known_hosts_files=())
    available = ("ssh-ed25519", "ecdsa-sha2-nistp256", "rsa-sha2-512", "rsa-sha2-256")
    assert HostKeyChecker().preferred_key_types(spec, available) == (
        "rsa-sha2-512", "rsa-sha2-256", "ssh-ed25519", "ecdsa-sha2-nistp256")


def test_fingerprint_matches_ssh_keygen(tmp_path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")],
                   check=True)
    expected = subprocess.run(["ssh-keygen", "-lf", str(tmp_path / "k.pub")], capture_output=True,
                              text=True, check=True).stdout.split()[1]
    assert fingerprint(paramiko.PKey.from_path(tmp_path / "k")) == expected


def test_cipher_preference_keeps_only_available() -> None:
    available = paramiko.Transport._preferred_ciphers
    ordered = prefer(PREFERRED_CIPHERS, available)
    assert ordered[0] == "aes128-gcm@openssh.com"
    assert sorted(ordered) == sorted(available)
    assert prefer(("chacha20-poly1305@openssh.com", "b"), ("a", "b")) == ("b", "a")
