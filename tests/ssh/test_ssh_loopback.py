"""The SSH layer against a real sshd on 127.0.0.1 (fixture in conftest.py)."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import paramiko
import pytest

from fireflyhpc.errors import RemoteCommandError, SSHError
from fireflyhpc.ssh import (Authenticator, CallbackPrompter, ChannelOpenError, RemoteTimeoutError,
                            SSHConnection)

from ssh_testutil import (DUO_INSTRUCTIONS, DUO_PROMPT, DUO_TITLE, converse, free_port, keygen,
                          run_concurrently, start_duo_server)

HOSTILE = ["a'; echo foo", "$(id)", "`id`", "x\ny", "back\\slash", "*", "-n", "", "tab\there",
           '"dq"', "!bang", "~", "é ü"]


def open_target(config: Path, **kwargs) -> SSHConnection:
    kwargs.setdefault("prompter", CallbackPrompter())
    return SSHConnection.open("target", ssh_config=str(config), **kwargs)


def test_run_commands_over_one_transport(make_config) -> None:
    with open_target(make_config()) as conn:
        first = conn.transport
        assert conn.run(["whoami"]).stdout == "ffssh-key\n"
        result = conn.run(["sh", "-c", "echo out; echo err >&2; exit 0"])
        assert (result.exit_code, result.stdout, result.stderr) == (0, "out\n", "err\n")
        assert conn.transport is first
        assert first.local_cipher == "aes128-gcm@openssh.com"
    assert not first.is_active()


def test_hostile_arguments_arrive_verbatim(make_config) -> None:
    with open_target(make_config()) as conn:
        out = conn.run(["printf", "%s\\0", *HOSTILE]).stdout
    assert out.split("\0")[:-1] == HOSTILE


def test_failure_carries_argv_exit_code_and_stderr_tail(make_config) -> None:
    argv = ["sh", "-c", "for i in 1 2 3 4 5 6 7; do echo line$i >&2; done; exit 3"]
    with open_target(make_config()) as conn:
        with pytest.raises(RemoteCommandError) as info:
            conn.run(argv)
        assert conn.run(argv, check=False).exit_code == 3
    error = info.value
    assert (error.argv, error.exit_code, error.host) == (argv, 3, "target")
    assert "line7" in str(error) and "line1" not in str(error) and "exited 3" in str(error)
    assert "\n" not in str(error)


def test_input_env_and_big_output(make_config) -> None:
    blob = os.urandom(3 * 2**20)
    with open_target(make_config()) as conn:
        assert conn.run(["cat"], input=b"hello").stdout == "hello"
        echoed = conn.run(["sh", "-c", "cat; cat /etc/passwd >&2"], input=blob.hex())
        assert echoed.stdout == blob.hex() and "root:" in echoed.stderr
        env = {"FOO": "a b'c $(id)", "BAR_2": "x\ny"}
        out = conn.run(["sh", "-c", 'printf "%s|%s" "$FOO" "$BAR_2"'], env=env).stdout
        assert out == "a b'c $(id)|x\ny"
        with pytest.raises(ValueError):
            conn.run(["true"], env={"BAD-NAME": "1"})


def test_timeout_stops_the_command(make_config) -> None:
    marker = "ffssh-timeout-" + os.urandom(4).hex()
    with open_target(make_config()) as conn:
        with pytest.raises(RemoteTimeoutError, match="timed out"):
            conn.run(["sh", "-c", f"sleep 300; : {marker}"], timeout=1)
        assert conn.run(["echo", "still usable"]).stdout == "still usable\n"
        for _ in range(50):  # the remote shell got SIGTERM
            if conn.run(["pgrep", "-f", marker], check=False).exit_code == 1:
                break
            threading.Event().wait(0.1)
        else:
            pytest.fail("the timed-out command still runs")


def test_write_file_is_private_and_via_stdin(make_config) -> None:
    path = "/tmp/ffssh-secret-" + os.urandom(4).hex()
    try:
        with open_target(make_config()) as conn:
            conn.write_file(path, "token=s3cr3t\n")
            assert conn.run(["stat", "-c", "%a %U", path]).stdout == "600 ffssh-key\n"
            assert conn.run(["cat", path]).stdout == "token=s3cr3t\n"
            with conn.sftp() as sftp:
                assert sftp.stat(path).st_size == len("token=s3cr3t\n")
    finally:
        Path(path).unlink(missing_ok=True)


def test_direct_tcpip_channel_and_refusal(make_config) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def echo_once() -> None:
        client, _ = server.accept()
        with client:
            client.sendall(client.recv(100).upper())

    thread = threading.Thread(target=echo_once, daemon=True)
    thread.start()
    with open_target(make_config()) as conn:
        channel = conn.open_channel_to("127.0.0.1", server.getsockname()[1])
        try:
            channel.sendall(b"ping")
            assert channel.recv(100) == b"PING"
        finally:
            channel.close()
        with pytest.raises(ChannelOpenError) as info:
            conn.open_channel_to("127.0.0.1", free_port())
        assert info.value.code == 2
    server.close()
    thread.join(5)


def test_proxyjump_chain_over_loopback(make_config, sshd) -> None:
    key = sshd.keys["ffssh-key"]
    kh = Path(make_config().parent / "known_hosts")
    hop = (f"Host hop1 hop2\n    HostName 127.0.0.1\n    Port {sshd.port}\n    User ffssh-key\n"
           f"    IdentityFile {key}\n    UserKnownHostsFile {kh}\n")
    config = make_config(extra="    ProxyJump hop1,ffssh-key@hop2", more=hop)
    with open_target(config) as conn:
        assert len(conn.transports) == 3
        assert conn.run(["whoami"]).stdout == "ffssh-key\n"
        chained = conn.connect_to("target")
        assert len(chained.transports) == 1 and chained.is_active()
        assert chained.run(["echo", "via", "chain"]).stdout == "via chain\n"
        assert conn.run(["true"]).exit_code == 0 and chained.run(["true"]).exit_code == 0
    assert not chained.is_active()
    assert kh.read_text().count("\n") == 1


def test_unknown_host_key_refused_then_accepted(make_config, sshd) -> None:
    config = make_config(known_hosts="")
    kh = config.parent / "known_hosts"
    with pytest.raises(SSHError) as info:
        open_target(config)
    fp = subprocess.run(["ssh-keygen", "-lf", f"{sshd.dir}/host_ed25519.pub"],
                        capture_output=True, text=True, check=True).stdout.split()[1]
    message = str(info.value)
    assert "not known" in message and fp in message and "ssh-ed25519" in message
    assert "--accept-new-host-key" in message
    assert kh.read_text() == ""
    with open_target(config, accept_new_host_key=True) as conn:
        conn.run(["true"])
    assert kh.read_text() == sshd.known_hosts_line()
    with open_target(config) as conn:  # now known: no flag needed
        conn.run(["true"])
    # The real OpenSSH client agrees with what we wrote.
    ssh = subprocess.run(["ssh", "-F", str(config), "-o", "BatchMode=yes",
                          "-o", "StrictHostKeyChecking=yes", "target", "true"],
                         capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert ssh.returncode == 0, ssh.stderr


def test_accept_new_creates_private_known_hosts(make_config, tmp_path) -> None:
    kh = tmp_path / "new" / "dir" / "known_hosts"
    config = make_config(known_hosts=False, extra="    HashKnownHosts yes")
    config.write_text(config.read_text().replace(str(tmp_path / "known_hosts"), str(kh)))
    with open_target(config, accept_new_host_key=True):
        pass
    assert stat.S_IMODE(kh.stat().st_mode) == 0o600
    assert stat.S_IMODE(kh.parent.stat().st_mode) == 0o700
    assert kh.read_text().startswith("|1|")
    with open_target(config):  # the hashed entry is found again
        pass


def test_changed_host_key_refused_loudly(make_config, sshd, tmp_path) -> None:
    other = keygen(tmp_path / "other_host_key")
    line = " ".join(Path(f"{other}.pub").read_text().split()[:2])
    config = make_config(known_hosts=f"# comment\n[127.0.0.1]:{sshd.port} {line}\n")
    kh = config.parent / "known_hosts"
    for accept in (False, True):
        with pytest.raises(SSHError) as info:
            open_target(config, accept_new_host_key=accept)
        message = str(info.value)
        assert "HOST KEY CHANGED" in message and "man-in-the-middle" in message
        assert f"{kh} line 2" in message
    assert kh.read_text().count("\n") == 2


def test_hashed_known_hosts_and_revoked(make_config, sshd) -> None:
    name = paramiko.HostKeys.hash_host(f"[127.0.0.1]:{sshd.port}")
    config = make_config(known_hosts=f"{name} {sshd.host_key_line}\n")
    with open_target(config):
        pass
    config = make_config(known_hosts=sshd.known_hosts_line() + f"@revoked * {sshd.host_key_line}\n")
    with pytest.raises(SSHError, match="REVOKED"):
        open_target(config)


def test_agent_key(make_config, sshd, tmp_path, monkeypatch) -> None:
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL,
                             stdin=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if sock.exists():
                break
            threading.Event().wait(0.05)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        subprocess.run(["ssh-add", "-q", str(sshd.keys["ffssh-key"])], check=True,
                       capture_output=True, env={**os.environ})
        config = make_config(identity=None, identities_only=False)
        with open_target(config, prompter=CallbackPrompter()) as conn:
            assert conn.run(["whoami"]).stdout == "ffssh-key\n"
    finally:
        agent.terminate()
        agent.wait(10)


def test_encrypted_key_asks_passphrase_once(make_config, sshd, tmp_path) -> None:
    key = keygen(tmp_path / "id_enc", passphrase="correct horse")
    sshd.authorize("ffssh-key", Path(f"{key}.pub"))
    asked: list[str] = []
    answers = iter(["wrong one", "correct horse"])

    def secret(prompt: str) -> str:
        asked.append(prompt)
        return next(answers)

    auth = Authenticator(CallbackPrompter(secret=secret))
    config = make_config(identity=key)
    for _ in range(2):  # the second connection reuses the decrypted key
        with SSHConnection.open("target", ssh_config=str(config), authenticator=auth) as conn:
            conn.run(["true"])
    assert asked == [f"Enter passphrase for key '{key}': "] * 2


def test_encrypted_key_without_terminal_is_a_clear_error(make_config, sshd, tmp_path) -> None:
    key = keygen(tmp_path / "id_enc2", passphrase="secret phrase")
    config = make_config(identity=key)
    script = ("import sys\nfrom fireflyhpc.ssh import SSHConnection\nfrom fireflyhpc.errors "
              "import SSHError\ntry:\n    SSHConnection.open('target', ssh_config=sys.argv[1])\n"
              "except SSHError as e:\n    print(e)\n    sys.exit(4)\n")
    proc = subprocess.run([sys.executable, "-c", script, str(config)], capture_output=True,
                          text=True, timeout=60, start_new_session=True,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 4, proc.stderr
    assert "no terminal" in proc.stdout


def test_two_factor_answers_once_per_session(make_config, sshd) -> None:
    calls: list[tuple[str, str, list]] = []

    def interactive(title, instructions, prompts):
        calls.append((title, instructions, list(prompts)))
        return [sshd.passwords["ffssh-2fa"]]

    config = make_config("ffssh-2fa")
    with open_target(config, prompter=CallbackPrompter(interactive=interactive)) as conn:
        for _ in range(3):
            conn.run(["true"])
        with conn.sftp() as sftp:
            sftp.listdir(".")
        conn.open_channel_to("127.0.0.1", sshd.port).close()
    assert calls == [("", "", [("Password: ", False)])]


def test_two_factor_wrong_answer_names_methods(make_config, sshd) -> None:
    prompter = CallbackPrompter(interactive=lambda t, i, p: ["wrong"] * len(p))
    with pytest.raises(SSHError) as info:
        open_target(make_config("ffssh-2fa"), prompter=prompter)
    message = str(info.value)
    assert "authentication failed" in message
    assert "publickey" in message and "keyboard-interactive" in message


def test_password_authentication(make_config, sshd) -> None:
    asked: list[str] = []

    def secret(prompt: str) -> str:
        asked.append(prompt)
        return sshd.passwords["ffssh-key"] if len(asked) > 1 else "nope"

    config = make_config(identity=None, extra="    KbdInteractiveAuthentication no")
    with open_target(config, prompter=CallbackPrompter(secret=secret)) as conn:
        assert conn.run(["whoami"]).stdout == "ffssh-key\n"
    assert asked == ["ffssh-key@127.0.0.1's password: "] * 2


def test_wrong_key_fails_with_tried_methods(make_config, tmp_path) -> None:
    key = keygen(tmp_path / "id_stranger")
    config = make_config(identity=key, extra="    BatchMode yes")
    with pytest.raises(SSHError) as info:
        open_target(config)
    assert "authentication failed" in str(info.value)
    assert f"publickey {key}" in str(info.value)


def test_refused_port_and_bad_names(make_config, tmp_path) -> None:
    config = make_config()
    text = config.read_text()
    config.write_text(text.replace("Port ", f"Port {free_port()}\n#"))
    with pytest.raises(SSHError, match="refused"):
        open_target(config)
    config.write_text(text.replace("HostName 127.0.0.1", "HostName no-such-host..invalid"))
    with pytest.raises(SSHError, match="unknown host"):
        open_target(config)


@pytest.mark.parametrize("greeting", [b"", b"HTTP/1.1 400 Bad Request\r\n\r\n"])
def test_silent_or_foreign_server_is_an_ssh_error(make_config, greeting: bytes) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    held: list[socket.socket] = []

    def accept() -> None:
        client, _ = server.accept()
        held.append(client)
        if greeting:
            client.sendall(greeting)
            client.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    config = make_config(extra="    ConnectTimeout 2")
    config.write_text(config.read_text().replace("Port ", f"Port {port}\n#"))
    try:
        with pytest.raises(SSHError, match="handshake"):
            open_target(config)
    finally:
        thread.join(5)
        for client in held:
            client.close()
        server.close()


def test_terminal_prompter_on_a_real_tty(make_config, sshd, tmp_path) -> None:
    """Two connections in one run: the passphrase is asked once, the 2FA prompt each time."""
    key = keygen(tmp_path / "id_tty", passphrase="tty phrase")
    sshd.authorize("ffssh-2fa", Path(f"{key}.pub"))
    config = make_config("ffssh-2fa", identity=key)
    script = ("import sys\nfrom fireflyhpc.ssh import SSHConnection\n"
              "for _ in range(2):\n"
              "    with SSHConnection.open('target', ssh_config=sys.argv[1]) as c:\n"
              "        print('REMOTE', c.run(['whoami']).stdout.strip())\n")
    password = sshd.passwords["ffssh-2fa"].encode()
    status, seen = converse([sys.executable, "-c", script, str(config)], [
        (f"Enter passphrase for key '{key}': ".encode(), b"tty phrase"),
        (b"Password: ", password), (b"REMOTE ffssh-2fa", b""), (b"Password: ", password)])
    assert status == 0, seen
    assert seen.count(b"REMOTE ffssh-2fa") == 2
    assert seen.count(b"Enter passphrase") == 1 and seen.count(b"Password: ") == 2
    assert b"tty phrase" not in seen and password not in seen


def test_connect_prompt_starts_on_its_own_line(make_config, sshd, tmp_path) -> None:
    """On a terminal `connect` rewrites its progress line in place (no newline); the
    login's prompt used to follow it on the same line: `connecting to targetPassword: `."""
    config = make_config("ffssh-2fa")
    profile = tmp_path / "fireflyhpc.toml"
    profile.write_text('[clusters.loop]\nlogin = "target"\n')
    argv = [sys.executable, "-m", "fireflyhpc", "--ssh-config", str(config), "--config",
            str(profile), "connect", "--cluster", "loop", "--no-browser"]
    # Wrong answers end it at the login, before anything would reach for Slurm (ssh
    # itself asks up to three times).
    status, seen = converse(argv, [(b"Password: ", b"not the password")] * 3)
    text = seen.decode("utf-8", "replace")
    assert status == 4 and "Traceback" not in text, text
    lines = _shown_lines(seen)
    progress = [n for n, line in enumerate(lines) if line.startswith("connecting to target")]
    prompts = [n for n, line in enumerate(lines) if "Password: " in line]
    assert len(progress) == 1 and prompts, text
    for n in prompts:  # each prompt on a line of its own, after the progress line
        assert n > progress[0] and not lines[n].startswith("connecting"), text
    assert lines[progress[0]].rstrip() == "connecting to target", text


def _shown_lines(seen: bytes) -> list[str]:
    """What a terminal shows on each line: after a \\r, the text that follows overwrites."""
    text = seen.decode("utf-8", "replace")
    return [line.rstrip("\r").split("\r")[-1] for line in text.split("\n")]


def test_openssh_prompt_starts_on_its_own_line(make_config, sshd, tmp_path) -> None:
    """An ssh master shares the terminal to ask its own questions; they must not follow
    the progress line either."""
    config = make_config("ffssh-2fa")
    script = ("import os, sys, tempfile\n"
              "from fireflyhpc.cli.connect_cmd import StatusLine\n"
              "from fireflyhpc.ssh.master import Master\n"
              "StatusLine()('opening the tunnel')\n"
              "control = os.path.join(tempfile.mkdtemp(), 'c')\n"
              "ssh = ['ssh', '-F', sys.argv[1]]\n"
              "master = Master([*ssh, '-M', '-N', '-S', control, 'target'], control, 'target')\n"
              "master.wait_ready([*ssh, '-S', control], timeout=60)\n"
              "print('MASTER READY')\n"
              "master.close()\n")
    password = sshd.passwords["ffssh-2fa"].encode()
    status, seen = converse([sys.executable, "-c", script, str(config)],
                             [(b"Password:", password), (b"MASTER READY", b"")])
    assert status == 0, seen
    lines = _shown_lines(seen)
    asked = [line for line in lines if "Password:" in line]
    assert "opening the tunnel" in lines and len(asked) == 1, seen
    assert "opening the tunnel" not in asked[0], seen


def test_expected_failures_print_nothing_on_stderr(make_config, sshd) -> None:
    """paramiko logs refused channels and bad banners at ERROR; the user sees only our error."""
    config = make_config()
    script = f"""
import socket, sys, threading
from fireflyhpc.errors import SSHError
from fireflyhpc.ssh import SSHConnection
with SSHConnection.open('target', ssh_config=sys.argv[1]) as conn:
    try:
        conn.open_channel_to('127.0.0.1', {free_port()})
    except SSHError as exc:
        print(exc)
server = socket.socket()
server.bind(('127.0.0.1', 0))
server.listen(1)
def answer():
    client, _ = server.accept()
    client.sendall(b'HTTP/1.0 400 Bad Request\\r\\n\\r\\n')
    client.close()
threading.Thread(target=answer, daemon=True).start()
port = server.getsockname()[1]
open(sys.argv[2], 'w').write(f'Host web\\n HostName 127.0.0.1\\n Port {{port}}\\n')
try:
    SSHConnection.open('web', ssh_config=sys.argv[2])
except SSHError as exc:
    print(exc)
"""
    proc = subprocess.run([sys.executable, "-c", script, str(config),
                           str(config.parent / "web_config")],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    lines = proc.stdout.splitlines()
    assert proc.stderr == "" and proc.returncode == 0
    assert lines[0].endswith("Connection refused") and "target could not connect" in lines[0]
    assert "protocol banner" in lines[1] and "is an SSH server listening there?" in lines[1]


def _open_in_private_netns(config: Path, setup: str) -> subprocess.CompletedProcess:
    """Try SSHConnection.open('x') in a fresh network namespace (nothing can leave it)."""
    script = ("import sys\nfrom fireflyhpc.errors import SSHError\n"
              "from fireflyhpc.ssh import SSHConnection\ntry:\n"
              "    SSHConnection.open('x', ssh_config=sys.argv[1])\n"
              "except SSHError as exc:\n    print(exc)\n    sys.exit(4)\n")
    shell = f"{setup}\nexec \"$0\" -c \"$1\" \"$2\""
    return subprocess.run(["unshare", "--net", "sh", "-ec", shell, sys.executable, script,
                           str(config)], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def test_dns_failure(sshd, tmp_path) -> None:
    config = tmp_path / "cfg"
    config.write_text("Host x\n  HostName no-such-host.invalid\n  ConnectTimeout 1\n")
    proc = _open_in_private_netns(config, "ip link set lo up")
    assert proc.returncode == 4, proc.stderr
    assert proc.stdout.startswith("unknown host 'no-such-host.invalid' (for x): ")


def test_connect_timeout(tmp_path) -> None:
    """A listener whose accept queue is full drops further SYNs: connect() times out."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        filler = socket.create_connection(("127.0.0.1", port))
        config = tmp_path / "cfg"
        config.write_text(f"Host x\n  HostName 127.0.0.1\n  Port {port}\n  ConnectTimeout 1\n")
        try:
            with pytest.raises(SSHError) as info:
                SSHConnection.open("x", ssh_config=str(config))
        finally:
            filler.close()
    assert str(info.value) == f"connection to x (127.0.0.1 port {port}) timed out after 1 s"


def test_proxycommand(make_config, sshd) -> None:
    """ProxyCommand through the real OpenSSH client (``ssh -W``), and nothing left behind."""
    config = make_config()
    config.write_text(config.read_text() + "Host hop\n    HostName 127.0.0.1\n"
                      f"    Port {sshd.port}\n    User ffssh-key\n"
                      f"    IdentityFile {sshd.keys['ffssh-key']}\n    BatchMode yes\n"
                      f"    UserKnownHostsFile {config.parent / 'known_hosts'}\n")
    text = config.read_text().replace(
        "    ConnectTimeout 10\n", f"    ConnectTimeout 10\n    ProxyCommand ssh -F {config} "
                                  "-W %h:%p hop\n", 1)
    config.write_text(text)
    with open_target(config) as conn:
        assert conn.run(["echo", "through", "proxycommand"]).stdout == "through proxycommand\n"
        proxy = conn.transport.sock
        assert isinstance(proxy, paramiko.ProxyCommand)
        process = proxy.process
    # Closing the connection ended the `ssh -W` process, and cleanly: SIGTERM makes
    # OpenSSH's client leave its loop and exit 0 (a crash or a kill shows otherwise).
    assert process.poll() == 0


def _duo_config(tmp_path: Path) -> tuple[Path, Path, int, threading.Thread]:
    host_key = keygen(tmp_path / "duo_host_key")
    port, thread = start_duo_server(host_key, "pw-duo")
    line = " ".join(Path(f"{host_key}.pub").read_text().split()[:2])
    (tmp_path / "duo_known_hosts").write_text(f"[127.0.0.1]:{port} {line}\n")
    config = tmp_path / "duo_config"
    config.write_text(f"Host duo\n  HostName 127.0.0.1\n  Port {port}\n  User ffuser\n"
                      f"  UserKnownHostsFile {tmp_path / 'duo_known_hosts'}\n"
                      "  IdentitiesOnly yes\n  IdentityFile /nonexistent\n")
    return config, host_key, port, thread


def test_duo_style_prompts_shown_as_worded(tmp_path) -> None:
    config, _, _, thread = _duo_config(tmp_path)
    calls: list[tuple[str, str, list]] = []

    def interactive(title, instructions, prompts):
        calls.append((title, instructions, list(prompts)))
        return ["pw-duo"] if len(calls) == 1 else ["1"]

    conn = SSHConnection.open("duo", ssh_config=str(config),
                              prompter=CallbackPrompter(interactive=interactive))
    try:
        assert conn.transport.is_authenticated()
    finally:
        conn.close()
    thread.join(10)
    assert calls == [("", "", [("Password: ", False)]),
                     (DUO_TITLE, DUO_INSTRUCTIONS, [(DUO_PROMPT, True)])]


def test_duo_style_prompts_on_a_real_tty(tmp_path) -> None:
    config, _, _, thread = _duo_config(tmp_path)
    script = ("import sys\nfrom fireflyhpc.ssh import SSHConnection\n"
              "c = SSHConnection.open('duo', ssh_config=sys.argv[1])\n"
              "print('AUTHENTICATED', c.transport.is_authenticated())\nc.close()\n")
    status, seen = converse([sys.executable, "-c", script, str(config)],
                             [(b"Password: ", b"pw-duo"), (DUO_PROMPT.encode(), b"1")])
    thread.join(10)
    assert status == 0, seen
    text = seen.decode().replace("\r\n", "\n")
    assert DUO_TITLE + "\n" + DUO_INSTRUCTIONS in text
    assert "AUTHENTICATED True" in text
    assert DUO_PROMPT + "1\n" in text  # echo on: the answer is shown
    assert "pw-duo" not in text  # echo off: the password is not


def test_no_passphrase_asked_when_a_plain_key_works(make_config, sshd, tmp_path) -> None:
    encrypted = keygen(tmp_path / "id_first_encrypted", passphrase="never asked")
    config = make_config()
    text = config.read_text().replace("    IdentityFile ", f"    IdentityFile {encrypted}\n"
                                                        "    IdentityFile ", 1)
    config.write_text(text)
    asked: list[str] = []
    prompter = CallbackPrompter(secret=lambda prompt: asked.append(prompt) or "")
    with open_target(config, prompter=prompter) as conn:
        conn.run(["true"])
    assert asked == []


def test_connection_lost_during_a_command(make_config) -> None:
    with open_target(make_config()) as conn:
        timer = threading.Timer(1.0, conn.transport.close)
        timer.start()
        try:
            with pytest.raises(SSHError, match="lost while running"):
                conn.run(["sleep", "4"])  # runs on, like any command of a dropped session
        finally:
            timer.cancel()
        assert not conn.is_active()


def test_concurrent_commands_wait_for_a_session_slot(sshd, make_config) -> None:
    """sshd refuses a session beyond MaxSessions (1 on this port): the commands take
    turns instead of failing."""
    config = make_config(known_hosts=sshd.known_hosts_line(port=sshd.limited_port))
    config.write_text(config.read_text().replace(f"Port {sshd.port}\n",
                                                 f"Port {sshd.limited_port}\n"))
    with SSHConnection.open("target", ssh_config=str(config)) as conn:
        results, errors = run_concurrently(
            conn, [[["sh", "-c", f"sleep 0.2; echo {i}"]] for i in range(4)])
    assert not errors, errors
    assert sorted(results) == [f"{i}\n" for i in range(4)]


def test_tunnel_rides_a_two_factor_connection_without_asking_again(make_config, sshd,
                                                                    web) -> None:
    """What `connect` does when the login needed a code: the tunnel reuses that
    connection instead of logging in again, and leaves it open when it closes."""
    import urllib.request

    from fireflyhpc.tunnel import TunnelRequest, open_tunnel

    calls: list[str] = []

    def interactive(title, instructions, prompts):
        calls.append(prompts[0][0])
        return [sshd.passwords["ffssh-2fa"]]

    config = make_config("ffssh-2fa")
    with open_target(config, prompter=CallbackPrompter(interactive=interactive)) as conn:
        assert conn.authenticator.asked_user
        request = TunnelRequest(node="127.0.0.1", remote_port=web,
                                login="target", hop="direct", ssh_config=str(config),
                                reuse=conn)
        tunnel = open_tunnel(request)
        try:
            with urllib.request.urlopen(tunnel.url, timeout=30) as response:
                assert response.read() == b"hello"
        finally:
            tunnel.close()
        assert conn.is_active(), "the session's own connection outlives its tunnel"
        conn.run(["true"])
    assert calls == ["Password: "], "one answer for the whole session"

def test_keys_alone_ask_nothing(make_config, sshd) -> None:
    with open_target(make_config("ffssh-key")) as conn:
        assert not conn.authenticator.asked_user
