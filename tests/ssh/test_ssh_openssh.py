"""The OpenSSH backend against real sshds on 127.0.0.1 (fixtures in conftest.py): the
PAM two-factor login (a key, then a code asked by keyboard-interactive), the user's own
ControlMaster, certificates, HostKeyAlias, and what is left after close and SIGKILL."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import paramiko
import psutil
import pytest

from fireflyhpc.errors import RemoteCommandError, SSHError
from fireflyhpc.ssh import CallbackPrompter, ChannelOpenError, RemoteTimeoutError, open_connection
from fireflyhpc.tunnel import TunnelRequest, open_tunnel

from ssh_testutil import converse, free_port, keygen

HOSTILE = ["a'; echo foo", "$(id)", "`id`", "x\ny", "back\\slash", "*", "-n", "", "tab\there",
           '"dq"', "!bang", "~", "é ü"]
MARK = "FIREFLYHPC_SSH_TEST_MARK"


class Questions:
    """A prompter that answers the code and records every question."""

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.calls: list[tuple[str, str]] = []
        self.prompter = CallbackPrompter(self._secret, self._interactive)

    def _secret(self, prompt: str) -> str:
        self.calls.append(("secret", prompt))
        return self.answer

    def _interactive(self, title, instructions, prompts) -> list[str]:
        self.calls.append(("interactive", prompts[0][0]))
        return [self.answer] * len(prompts)


def control_lines(directory: Path) -> str:
    """What HPC centres with two-factor logins tell their users to put in ~/.ssh/config
    (``directory`` short: a socket path has room for about 100 bytes)."""
    return (f"    ControlMaster auto\n    ControlPath {directory}/cm-%C\n"
            "    ControlPersist 10m")


def ssh_cmd(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ssh", "-F", str(config), "-o", "BatchMode=yes", *args],
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)


@pytest.fixture
def live_user_master(make_config, sshd) -> Iterator[Path]:
    """The two-factor user's config with a ControlMaster the user started by hand
    (``ssh -fN target``, the code typed on a terminal); exited at the end."""
    sockets = Path(tempfile.mkdtemp(prefix="ffcm-"))
    config = make_config("ffssh-2fa", extra=control_lines(sockets))
    password = sshd.passwords["ffssh-2fa"].encode()
    # A shell owns the terminal, as in real life: a session leader's exit would hang up
    # the backgrounded master before it has left the terminal's session.
    status, seen = converse(["sh", "-c", 'ssh -F "$1" -fN target && sleep 1', "sh",
                             str(config)], [(b"Password: ", password)])
    assert status == 0, seen
    assert ssh_cmd(config, "-O", "check", "target").returncode == 0
    yield config
    ssh_cmd(config, "-O", "exit", "target")
    shutil.rmtree(sockets, ignore_errors=True)


def fetch_through_tunnel(conn, config: Path, port: int) -> str:
    """Open a direct-hop tunnel riding ``conn`` to 127.0.0.1:port, GET /, close it;
    return what carried it. No paramiko transport may run meanwhile."""
    request = TunnelRequest(node="127.0.0.1", remote_port=port, login="target", hop="direct",
                            ssh_config=str(config), reuse=conn)
    tunnel = open_tunnel(request)
    try:
        with urllib.request.urlopen(tunnel.url, timeout=30) as response:
            assert response.read() == b"hello"
        assert not [t for t in threading.enumerate() if isinstance(t, paramiko.Transport)], \
            "no pure-Python SSH on the data path"
        return tunnel.via or ""
    finally:
        tunnel.close()


# -- the two-factor login ------------------------------------------------------------------

def test_users_live_master_means_no_question(live_user_master, web) -> None:
    questions = Questions("never asked")
    with open_connection("target", ssh_config=str(live_user_master), backend="openssh",
                         prompter=questions.prompter) as conn:
        assert conn.master is None, "the user's own master carries it"
        assert conn.run(["whoami"]).stdout == "ffssh-2fa\n"
        via = fetch_through_tunnel(conn, live_user_master, web)
        assert "your own master" in via
        assert not conn.asked_user
    assert questions.calls == []
    # fireflyhpc never closes the user's master; it is still usable.
    assert ssh_cmd(live_user_master, "-O", "check", "target").returncode == 0
    done = ssh_cmd(live_user_master, "target", "echo", "still mine")
    assert done.returncode == 0 and done.stdout == "still mine\n"


def test_without_a_master_one_question_and_the_tunnel_rides_it(make_config, sshd, web) -> None:
    config = make_config("ffssh-2fa")
    questions = Questions(sshd.passwords["ffssh-2fa"])
    with open_connection("target", ssh_config=str(config), backend="auto",
                         prompter=questions.prompter) as conn:
        assert conn.backend == "openssh" and conn.master is not None
        assert conn.asked_user
        for _ in range(3):
            conn.run(["true"])
        via = fetch_through_tunnel(conn, config, web)
        assert "OpenSSH" in via
        assert conn.is_active(), "the caller's connection outlives its tunnel"
        master = psutil.Process(conn.master.proc.pid)
        workdir = Path(conn.control).parent
        descendants = master.children(recursive=True)
    assert questions.calls == [("interactive", "(ffssh-2fa@127.0.0.1) Password: ")]
    assert not master.is_running() and not [p for p in descendants if p.is_running()]
    assert not workdir.exists()


def test_wrong_or_no_answer_is_one_line(make_config, sshd, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    config = make_config("ffssh-2fa")
    wrong = Questions("wrong code")
    with pytest.raises(SSHError) as info:
        open_connection("target", ssh_config=str(config), backend="openssh",
                        prompter=wrong.prompter)
    message = str(info.value)
    assert message.startswith("authentication failed for target") and "\n" not in message
    assert "keyboard-interactive" in message and wrong.calls
    with pytest.raises(SSHError, match="no answers available for the server's prompts"):
        open_connection("target", ssh_config=str(config), backend="openssh",
                        prompter=CallbackPrompter())
    assert not list(tmp_path.glob("ffhpc-ssh-*")), "the private directory is removed"


def test_ssh_asks_on_the_terminal(make_config, sshd) -> None:
    """No prompter and a terminal: ssh asks there itself, in its own words."""
    config = make_config("ffssh-2fa")
    script = ("import sys\nfrom fireflyhpc.ssh import open_connection\n"
              "with open_connection('target', ssh_config=sys.argv[1], backend='openssh') as c:\n"
              "    print('REMOTE', c.run(['whoami']).stdout.strip(), c.asked_user)\n")
    password = sshd.passwords["ffssh-2fa"].encode()
    status, seen = converse([sys.executable, "-c", script, str(config)],
                            [(b"Password: ", password)])
    assert status == 0, seen
    assert b"REMOTE ffssh-2fa True" in seen
    assert seen.count(b"Password: ") == 1 and password not in seen


def test_no_terminal_and_no_prompter_is_a_clear_error(make_config, sshd) -> None:
    config = make_config("ffssh-2fa")
    script = ("import sys\nfrom fireflyhpc.errors import SSHError\n"
              "from fireflyhpc.ssh import open_connection\ntry:\n"
              "    open_connection('target', ssh_config=sys.argv[1], backend='openssh')\n"
              "except SSHError as e:\n    print(e)\n    sys.exit(4)\n")
    proc = subprocess.run([sys.executable, "-c", script, str(config)], capture_output=True,
                          text=True, timeout=60, start_new_session=True,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 4, proc.stderr
    assert "no terminal to ask on" in proc.stdout


def test_the_openssh_path_loads_no_paramiko(make_config, web) -> None:
    """Connection, commands and a tunnel over OpenSSH never import the Python SSH stack
    (its import alone costs a third of a second at every start)."""
    config = make_config()
    script = ("import sys, urllib.request\n"
              "from fireflyhpc.ssh import open_connection\n"
              "from fireflyhpc.tunnel import TunnelRequest, open_tunnel\n"
              "with open_connection('target', ssh_config=sys.argv[1]) as conn:\n"
              "    conn.run(['true'])\n"
              "    tunnel = open_tunnel(TunnelRequest(node='127.0.0.1', login='target',\n"
              "        remote_port=int(sys.argv[2]), hop='direct', reuse=conn))\n"
              "    print(urllib.request.urlopen(tunnel.url, timeout=30).read().decode())\n"
              "    tunnel.close()\n"
              "print(sorted(m for m in sys.modules if m.split('.')[0] == 'paramiko'))\n")
    done = subprocess.run([sys.executable, "-c", script, str(config), str(web)],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                          start_new_session=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["hello", "[]"]


# -- commands, files, processes, forwards ----------------------------------------------------

def test_commands_files_processes_and_forwards(make_config) -> None:
    with open_connection("target", ssh_config=str(make_config()), backend="openssh") as conn:
        assert conn.run(["printf", "%s\\0", *HOSTILE]).stdout.split("\0")[:-1] == HOSTILE
        result = conn.run(["sh", "-c", "echo out; echo err >&2; exit 3"], check=False)
        assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "err\n")
        with pytest.raises(RemoteCommandError, match="exited 3"):
            conn.run(["sh", "-c", "exit 3"])
        blob = os.urandom(2 * 2**20).hex()
        assert conn.run(["cat"], input=blob).stdout == blob
        env = {"FOO": "a b'c $(id)", "BAR_2": "x\ny"}
        assert conn.run(["sh", "-c", 'printf "%s|%s" "$FOO" "$BAR_2"'], env=env).stdout == \
            "a b'c $(id)|x\ny"
        path = "/tmp/ffssh-openssh-" + secrets.token_hex(4)
        try:
            conn.write_file(path, "token=s3cr3t\n")
            assert conn.run(["stat", "-c", "%a %U", path]).stdout == "600 ffssh-key\n"
        finally:
            Path(path).unlink(missing_ok=True)
        marker = "ffssh-timeout-" + secrets.token_hex(4)
        with pytest.raises(RemoteTimeoutError, match="timed out"):
            conn.run(["sh", "-c", f"sleep 300 & sleep 300; : {marker}"], timeout=1)
        deadline = time.monotonic() + 10
        while conn.run(["pgrep", "-u", "ffssh-key", "sleep"], check=False).stdout and \
                time.monotonic() < deadline:
            time.sleep(0.2)
        assert not conn.run(["pgrep", "-u", "ffssh-key", "sleep"], check=False).stdout, \
            "the timed-out command's whole process group got SIGTERM"
        proc = conn.start(["sh", "-c", 'echo "ready $$"; read -r word; echo "got $word"; exit 7'])
        assert proc.readline(timeout=30).startswith(b"ready ")
        proc.write(b"detach\n")
        assert proc.readline(timeout=30) == b"got detach\n"
        assert proc.wait(timeout=30) == 7 and proc.poll() == 7
        proc.close()
        holder = conn.start(["cat"])
        assert holder.readline(timeout=0.5) is None and holder.poll() is None
        holder.close_stdin()
        assert holder.readline(timeout=30) == b"" and holder.wait(timeout=30) == 0
        holder.close()


def test_forward_and_refusal(make_config, sshd) -> None:
    with open_connection("target", ssh_config=str(make_config()), backend="openssh") as conn:
        stream = conn.open_channel_to("127.0.0.1", sshd.port, timeout=10)
        try:
            stream.settimeout(10)
            assert stream.recv(100).startswith(b"SSH-2.0-")
        finally:
            stream.close()
        with pytest.raises(ChannelOpenError) as info:
            conn.open_channel_to("127.0.0.1", free_port())
        assert info.value.code == 2 and "Connection refused" in str(info.value)
        assert conn.run(["true"]).ok, "the connection survives a refused channel"


# -- host keys and certificates --------------------------------------------------------------

def test_unknown_and_changed_host_keys(make_config, sshd, tmp_path) -> None:
    config = make_config(known_hosts="")
    kh = config.parent / "known_hosts"
    fp = subprocess.run(["ssh-keygen", "-lf", f"{sshd.dir}/host_ed25519.pub"],
                        capture_output=True, text=True, check=True).stdout.split()[1]
    with pytest.raises(SSHError) as info:
        open_connection("target", ssh_config=str(config), backend="openssh")
    assert "not known" in str(info.value) and fp in str(info.value)
    assert "--accept-new-host-key" in str(info.value) and kh.read_text() == ""
    with open_connection("target", ssh_config=str(config), backend="openssh",
                         accept_new_host_key=True) as conn:
        conn.run(["true"])
    assert kh.read_text().split()[1:] == sshd.host_key_line.split()
    other = keygen(tmp_path / "impostor")
    kh.write_text(f"[127.0.0.1]:{sshd.port} " + " ".join(
        Path(f"{other}.pub").read_text().split()[:2]) + "\n")
    for accept in (False, True):
        with pytest.raises(SSHError, match="HOST KEY CHANGED") as info:
            open_connection("target", ssh_config=str(config), backend="openssh",
                            accept_new_host_key=accept)
        assert "man-in-the-middle" in str(info.value)


def test_host_certificate_and_user_certificate(cert_sshd, tmp_path) -> None:
    """The host is trusted only through its CA (@cert-authority), the user only through a
    certificate (the server has no authorized_keys at all)."""
    config = cert_sshd.config(tmp_path)
    with open_connection("certhost", ssh_config=str(config), backend="openssh") as conn:
        assert conn.run(["whoami"]).stdout == "ffssh-key\n"
    without_cert = cert_sshd.config(tmp_path, certificate=False)
    with pytest.raises(SSHError, match="authentication failed for certhost"):
        open_connection("certhost", ssh_config=str(without_cert), backend="openssh")
    without_ca = cert_sshd.config(tmp_path, ca_line=False)
    with pytest.raises(SSHError, match="not known"):
        open_connection("certhost", ssh_config=str(without_ca), backend="openssh")
    # The Python fallback cannot verify host certificates: it refuses, in one line.
    with pytest.raises(SSHError) as info:
        open_connection("certhost", ssh_config=str(config), backend="paramiko")
    assert "not known" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("backend", ["openssh", "paramiko"])
def test_host_key_alias_on_a_non_22_port(make_config, sshd, backend) -> None:
    """Both backends look the alias up alone, as OpenSSH does (sshd is not on port 22)."""
    assert sshd.port != 22
    config = make_config(known_hosts=f"login-alias {sshd.host_key_line}\n",
                         extra="    HostKeyAlias login-alias")
    with open_connection("target", ssh_config=str(config), backend=backend) as conn:
        assert conn.run(["whoami"]).stdout == "ffssh-key\n"
    bracketed = make_config(known_hosts=f"[login-alias]:{sshd.port} {sshd.host_key_line}\n",
                            extra="    HostKeyAlias login-alias")
    with pytest.raises(SSHError, match="not known"):
        open_connection("target", ssh_config=str(bracketed), backend=backend)


# -- what is left after close and after SIGKILL ----------------------------------------------

HOLDER = """
import json, sys, time
from fireflyhpc.ssh import open_connection
conn = open_connection('target', ssh_config=sys.argv[1], backend='openssh')
proc = conn.start(['sh', '-c', 'cat; : ' + sys.argv[2]])
master = conn.master
print(json.dumps({'master': master.proc.pid if master else None, 'control': conn.control}),
      flush=True)
time.sleep(600)
"""


def start_holder(config: Path, marker: str) -> tuple[subprocess.Popen[str], dict]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(config), marker], text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            start_new_session=True)
    assert proc.stdout is not None
    return proc, json.loads(proc.stdout.readline())


def remote_alive(config: Path, user: str, marker: str) -> bool:
    # "[c]at" matches the holder's "cat", not the command line of this very pgrep.
    found = ssh_cmd(config, "target", "pgrep", "-u", user, "-f", f"[c]at; : {marker}")
    return bool(found.stdout.strip())


def wait_for(predicate, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


def test_sigkill_ends_our_master_and_its_directory(make_config) -> None:
    config = make_config()
    marker = "ffssh-holder-" + secrets.token_hex(4)
    proc, info = start_holder(config, marker)
    master = psutil.Process(info["master"])
    ssh_children = master.children(recursive=True)
    assert ssh_children, "the guard runs ssh"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert wait_for(lambda: not master.is_running() and
                    not [p for p in ssh_children if p.is_running()]), "our master outlived us"
    assert wait_for(lambda: not Path(info["control"]).parent.exists()), \
        "the guard removes the private directory"


def test_a_master_lost_by_itself_leaves_the_directory_to_the_reconnect(make_config) -> None:
    """A lost link or a restarted sshd ends our master's ssh: its guard leaves the
    private directory (the askpass relay and the next control socket live there), so
    the reconnect binds; close then removes it."""
    config = make_config()
    with open_connection("target", ssh_config=str(config), backend="openssh") as conn:
        workdir = Path(conn.control).parent
        assert conn.master is not None
        (ssh,) = [p for p in psutil.Process(conn.master.proc.pid).children() if p.name() == "ssh"]
        ssh.terminate()  # what ServerAlive does to ssh on a dead path
        assert wait_for(lambda: not conn.is_active())
        conn.reconnect()
        assert conn.run(["echo", "back"]).stdout == "back\n"
        assert Path(conn.control).parent == workdir
        conn.reconnect()  # closing a live master on purpose keeps the directory too
        assert conn.run(["true"]).exit_code == 0
    assert not workdir.exists()


def test_sigkill_leaves_the_users_master_alive_and_ends_the_remote_process(
        live_user_master) -> None:
    marker = "ffssh-holder-" + secrets.token_hex(4)
    proc, info = start_holder(live_user_master, marker)
    assert info["master"] is None
    assert wait_for(lambda: remote_alive(live_user_master, "ffssh-2fa", marker))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert wait_for(lambda: not remote_alive(live_user_master, "ffssh-2fa", marker)), \
        "the remote process sees EOF when its holder dies"
    assert ssh_cmd(live_user_master, "-O", "check", "target").returncode == 0
    assert ssh_cmd(live_user_master, "target", "true").returncode == 0


def test_cli_bad_input_is_one_line_and_leaves_nothing(make_config, tmp_path) -> None:
    """An unknown host key through the real command: one line, exit 4, no ssh left, no
    private directory left."""
    config = make_config(known_hosts="")
    mark = secrets.token_hex(8)
    workdir = tmp_path / "tmp"
    workdir.mkdir()
    done = subprocess.run([sys.executable, "-m", "fireflyhpc", "--ssh-config", str(config),
                           "--ssh", "openssh", "tunnel", "127.0.0.1", "8080", "--login",
                           "target", "--hop", "direct"], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL,
                          env={**os.environ, MARK: mark, "TMPDIR": str(workdir)})
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert done.returncode == 4, done.stderr
    assert len(errors) == 1 and errors[0].startswith("fireflyhpc: error: host key for ")
    assert "Traceback" not in done.stderr and done.stdout == ""
    left = []
    for process in psutil.process_iter():
        try:
            if process.environ().get(MARK) == mark:
                left.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    assert not left and not list(workdir.iterdir())
