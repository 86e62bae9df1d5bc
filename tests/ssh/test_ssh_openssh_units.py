"""Pure pieces of the OpenSSH backend, and its askpass helper run as ssh runs it."""

from __future__ import annotations

import getpass
import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from fireflyhpc.errors import ConfigError
from fireflyhpc.ssh.askpass import AskpassRelay, helper_script
from fireflyhpc.ssh.auth import CallbackPrompter
from fireflyhpc.ssh.factory import choose_backend
from fireflyhpc.ssh.master import Master, private_dir_base
from fireflyhpc.ssh.openssh import _strict_policy, build_argv
from fireflyhpc.ssh.openssh_config import (
    destination_args,
    node_options,
    parse_g,
    spec_from_g,
)
from fireflyhpc.ssh.openssh_process import KILL_SCRIPT, PID_WRAPPER, split_pid
from fireflyhpc.ssh.process import LineBuffer
from fireflyhpc.ssh.remote import build_command
from fireflyhpc.ssh.sshmsg import ssh_error_from_stderr

GOLDEN_STDERR = {
    "unknown key": (["debug1: Server host key: ssh-ed25519 SHA256:abcDEF123",
                     "No ED25519 host key is known for 198.18.0.2 and you have requested "
                     "strict checking.", "Host key verification failed."],
                    "host key for login1 is not known: ssh-ed25519 SHA256:abcDEF123; refusing to "
                    "connect (check the fingerprint with your admins, then run again with "
                    "--accept-new-host-key to trust it)"),
    "changed key": (["debug1: Server host key: ssh-ed25519 SHA256:newKEY",
                     "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@",
                     "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @",
                     "Host key for 198.18.0.2 has changed and you have requested strict checking.",
                     "Host key verification failed."],
                    "HOST KEY CHANGED for login1: it offered ssh-ed25519 SHA256:newKEY"),
    "refused": (["ssh: connect to host 198.18.0.2 port 2222: Connection refused"],
                "connection to 198.18.0.2 port 2222 refused (for login1; is sshd running there?)"),
    "no route": (["ssh: connect to host 198.18.1.3 port 22: No route to host"],
                 "cannot connect to 198.18.1.3 port 22 (login1): No route to host"),
    "denied": (["debug1: Authentications that can continue: publickey",
                "ffuser@198.18.0.2: Permission denied (publickey)."],
               "authentication failed for login1 (tried: publickey)"),
    "resolve": (["ssh: Could not resolve hostname nosuch: Name or service not known"],
                "unknown host 'nosuch' (for login1)"),
    "not ssh": (["kex_exchange_identification: Connection closed by remote host",
                 "Connection closed by 127.0.0.1 port 2222"],
                "SSH handshake with login1 failed: Connection closed by remote host (is an SSH "
                "server listening there?)"),
    "other": (["debug1: x", "something odd happened"], "ssh to login1 failed: something odd happened"),
}


@pytest.mark.parametrize("case", sorted(GOLDEN_STDERR))
def test_ssh_error_from_stderr_golden(case) -> None:
    lines, expected = GOLDEN_STDERR[case]
    error = ssh_error_from_stderr("login1", lines)
    assert str(error).startswith(expected)
    assert "\n" not in str(error) and error.exit_status == 4


G_OUTPUT = """user ffuser
hostname 198.18.0.2
port 2222
stricthostkeychecking true
hostkeyalias login-ca
identityfile /keys/id_ffuser
identityfile /keys/id_other
identitiesonly yes
userknownhostsfile /kh/one /kh/two
globalknownhostsfile /etc/ssh/ssh_known_hosts
controlpath /tmp/cm-abc
proxyjump bastion
certificatefile /keys/id_ffuser-cert.pub
"""


def test_parse_g_and_spec_golden() -> None:
    found = parse_g(G_OUTPUT)
    assert found["identityfile"] == ["/keys/id_ffuser", "/keys/id_other"]
    spec = spec_from_g("login1", found)
    assert (spec.alias, spec.hostname, spec.port, spec.user) == ("login1", "198.18.0.2", 2222,
                                                                 "ffuser")
    assert spec.known_hosts_files == ("/kh/one", "/kh/two")
    assert spec.strict_host_key_checking == "yes" and spec.identities_only
    assert spec.known_hosts_name == "login-ca"  # HostKeyAlias alone, as OpenSSH looks it up
    assert spec.label == "ffuser@login1 (198.18.0.2) port 2222"


def test_node_options_inherit_only_what_the_node_leaves_at_defaults() -> None:
    login = parse_g(G_OUTPUT)
    home_kh = " ".join(os.path.expanduser(p) for p in ("~/.ssh/known_hosts",
                                                        "~/.ssh/known_hosts2"))
    bare = parse_g(f"user {getpass.getuser()}\nidentityfile ~/.ssh/id_rsa\n"
                   f"identityfile ~/.ssh/id_ed25519\nuserknownhostsfile {home_kh}\n")
    assert node_options(bare, login) == [
        "-o", "User=ffuser", "-o", "IdentityFile=/keys/id_ffuser",
        "-o", "IdentityFile=/keys/id_other", "-o", "IdentitiesOnly=yes",
        "-o", "CertificateFile=/keys/id_ffuser-cert.pub",
        "-o", "UserKnownHostsFile=/kh/one /kh/two"]
    configured = parse_g("user bob\nidentityfile /keys/bob\nuserknownhostsfile /kh/bob\n"
                         "certificatefile /keys/bob-cert.pub\n")
    assert node_options(configured, login) == []


@pytest.mark.parametrize("target,expected", [
    ("login1", ["--", "login1"]),
    ("alice@login1", ["-l", "alice", "--", "login1"]),
    ("alice@login1:2222", ["-l", "alice", "-p", "2222", "--", "login1"]),
    ("ssh://[::1]:2201", ["-p", "2201", "--", "::1"]),
])
def test_destination_args(target, expected) -> None:
    assert destination_args(target) == expected


@pytest.mark.parametrize("target", ["-oProxyCommand=x", "-l@host", "", "host:99999"])
def test_destination_args_refuse(target) -> None:
    with pytest.raises(ConfigError):
        destination_args(target)


@pytest.mark.parametrize("configured,accept,relaying,expected", [
    ("ask", False, False, None), ("ask", False, True, "yes"), ("yes", False, True, None),
    ("no", False, False, "accept-new"), ("accept-new", False, True, None),
    ("yes", True, False, "accept-new"),
])
def test_strict_policy(configured, accept, relaying, expected) -> None:
    assert _strict_policy(configured, accept, relaying=relaying) == expected


def test_pid_wrapper_and_kill_script_in_a_real_shell() -> None:
    """What runs on the remote side, run here (the outer ``sh -c`` plays the login shell
    sshd starts in a session of its own): the wrapper says its pid, the kill script
    ends that process's whole group, background jobs included."""
    argv = ["sh", "-c", "sleep 60 & sleep 60; : ffhpc-kill-test"]
    command = build_command(["sh", "-c", PID_WRAPPER, "sh", *argv])
    proc = subprocess.Popen(["sh", "-c", command], stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    assert proc.stderr is not None
    pid, rest = split_pid(proc.stderr.readline())
    assert pid is not None and rest == ""
    assert os.getpgid(pid) == proc.pid
    subprocess.run(["sh", "-c", KILL_SCRIPT, "sh", str(pid)], check=True, timeout=10)
    assert proc.wait(timeout=10) != 0
    left = subprocess.run(["pgrep", "-g", str(pid)], capture_output=True, text=True)
    assert left.stdout == "", "the background sleep of the group must be gone too"


def test_private_dir_base_leaves_room_for_socket_names() -> None:
    macos = "/var/folders/zz/zyxvpxvq6csfxvn_n0000000000000/T"  # fits
    assert private_dir_base(macos) == macos
    deep = "/tmp/pytest-of-someone/pytest-1234/test_a_long_test_name_for_sure0"
    assert private_dir_base(deep) == "/tmp"


def test_master_hands_over_only_what_the_server_said_before_the_login(tmp_path) -> None:
    """The text before a question goes to the prompter as instructions: never debug
    lines, nor anything after the login (commands ssh logs then)."""
    script = ("printf '%s\\n' 'Duo two-factor login' 'debug1: Next authentication method: x' "
              "'Enter a passcode' >&2; sleep 0.2; printf '%s\\n' 'Authenticated to h ([h]:22).' "
              "'  sh -c script line' >&2")
    master = Master(["sh", "-c", script], str(tmp_path / "ctl-1"), "h")
    assert master.proc.wait(timeout=10) == 0
    master.close()
    assert master.take_messages() == "Duo two-factor login\nEnter a passcode"
    assert master.take_messages() == ""
    assert not master.used_interactive_auth()


def test_split_pid_keeps_other_stderr() -> None:
    assert split_pid("banner\nfireflyhpc-pid 42\nerr\n") == (42, "banner\nerr\n")
    assert split_pid("no pid here\n") == (None, "no pid here\n")


def test_build_argv_env_prefix() -> None:
    assert build_argv(["run"], {"A": "1"}) == ["env", "A=1", "run"]
    with pytest.raises(ValueError):
        build_argv(["run"], {"BAD NAME": "1"})


def test_line_buffer() -> None:
    chunks = iter([b"ab", None, b"c\nde", b"f\ng", b""])
    lines = LineBuffer(lambda timeout: next(chunks))
    assert [lines.readline(1), lines.readline(1), lines.readline(1), lines.readline(1)] == \
        [b"abc\n", b"def\n", b"g", b""]


def test_choose_backend() -> None:
    assert choose_backend("paramiko") == "paramiko"
    assert choose_backend("openssh") == "openssh"  # OpenSSH 9 is installed here
    assert choose_backend("auto", prompter=CallbackPrompter()) == "openssh"
    with pytest.raises(ConfigError, match="must be one of"):
        choose_backend("putty")


def test_askpass_helper_relays_to_the_prompter() -> None:
    """The helper program, started as ssh starts it (prompt in argv, SSH_ASKPASS_PROMPT
    in the environment), gets its answers from the prompter through the socket."""
    asked: list[tuple[str, object]] = []

    def secret(prompt: str) -> str:
        asked.append(("secret", prompt))
        return "s3cret phrase"

    def interactive(title, instructions, prompts):
        asked.append(("interactive", (instructions, list(prompts))))
        return ["424242"]

    workdir = tempfile.mkdtemp(prefix="ffhpc-askpass-test-")
    relay = AskpassRelay(workdir, CallbackPrompter(secret, interactive),
                         context=lambda: "Duo two-factor login")
    try:
        assert oct(os.stat(workdir).st_mode & 0o777) == "0o700"
        assert oct(os.stat(relay.socket_path).st_mode & 0o777) == "0o600"
        env = {**os.environ, **relay.env()}

        def ask(prompt: str, kind: str = "") -> subprocess.CompletedProcess[str]:
            return subprocess.run([relay.helper, prompt], capture_output=True, text=True,
                                  timeout=30, env={**env, "SSH_ASKPASS_PROMPT": kind})

        assert ask("Enter passphrase for key '/k/id': ").stdout == "s3cret phrase\n"
        assert ask("(ffuser@login1) Password: ").stdout == "424242\n"
        assert ask("ffuser@login1's password: ").stdout == "s3cret phrase\n"
        notice = ask("Confirm user presence for key ED25519-SK SHA256:x", kind="none")
        assert notice.returncode == 0 and notice.stdout == ""
        assert relay.asked == 3 and relay.failure is None
        assert asked == [("secret", "Enter passphrase for key '/k/id': "),
                         ("interactive", ("Duo two-factor login",
                                          [("(ffuser@login1) Password: ", False)])),
                         ("secret", "ffuser@login1's password: ")]
        # A prompter that cannot answer: ssh gets no answer (exit 1), the caller the reason.
        relay.prompter = CallbackPrompter()
        refused = ask("(ffuser@login1) Verification code: ")
        assert refused.returncode == 1 and refused.stdout == ""
        with pytest.raises(Exception, match="no answers available"):
            relay.raise_failure()
        script = Path(relay.helper).read_text()
        assert "s3cret" not in script and "424242" not in script
        assert script == helper_script()
    finally:
        relay.close()
        os.rmdir(workdir)
