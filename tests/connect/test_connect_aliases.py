"""The s2firefly shell function: golden text, argument checks in real bash/zsh/fish,
rc-file install, and the real chained OpenSSH forward against the mini cluster."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from connect_testutil import check_golden, one_error_line, run_cli

from fireflyhpc import aliases
from fireflyhpc.aliases import AliasSpec
from fireflyhpc.errors import ConfigError
from fireflyhpc.hostspec import host_name

SHELLS = ("bash", "zsh", "fish")
SPEC = AliasSpec(login="login1", port=5601, ssh_config="/etc/ff dir/ssh_config")


def shell_argv(shell: str, script: str) -> list[str]:
    return [shell, "--no-config", "-c", script] if shell == "fish" else [shell, "-c", script]


@pytest.mark.parametrize("shell", SHELLS)
def test_generated_text_matches_golden_and_parses(shell: str, tmp_path: Path) -> None:
    text = aliases.render_function(SPEC, shell)
    check_golden(f"s2firefly.{'fish' if shell == 'fish' else 'sh'}", text)
    path = tmp_path / "f"
    path.write_text(text)
    proc = subprocess.run([shell, "-n", str(path)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr


def test_default_spec_golden() -> None:
    check_golden("s2firefly-default.sh", aliases.render_function(AliasSpec(login="hpc"), "bash"))


@pytest.fixture
def recording_ssh(tmp_path: Path) -> Path:
    """A directory whose `ssh` only records its arguments (to see what would run)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text("#!/bin/sh\nfor a in \"$@\"; do printf '[%s]' \"$a\"; done "
                                 f"> {tmp_path}/ssh-args\n")
    (bin_dir / "ssh").chmod(0o755)
    return bin_dir


def call(shell: str, tmp_path: Path, bin_dir: Path, *args: str,
         spec: AliasSpec = SPEC) -> subprocess.CompletedProcess:
    func = tmp_path / f"func.{shell}"
    func.write_text(aliases.render_function(spec, shell))
    (tmp_path / "ssh-args").unlink(missing_ok=True)
    quoted = " ".join("'" + a.replace("'", "'\\''") + "'" if shell != "fish"
                      else aliases.fish_quote(a) for a in args)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return subprocess.run(shell_argv(shell, f"source {func}; s2firefly {quoted}"),
                          capture_output=True, text=True, timeout=30, env=env, cwd=tmp_path)


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("node", ["node1", "gpu-01.ib", "n_2"])
def test_good_node_reaches_ssh_verbatim(shell: str, node: str, tmp_path: Path,
                                        recording_ssh: Path) -> None:
    proc = call(shell, tmp_path, recording_ssh, node)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "s2firefly: open http://localhost:5601/ (Ctrl-C to stop)\n"
    assert (tmp_path / "ssh-args").read_text() == (
        "[-F][/etc/ff dir/ssh_config][-t][-L][5601:localhost:5601][login1][ssh][-L]"
        f"[5601:localhost:5601][{node}]")


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("login,words", [
    ("ffuser@login1:2222", "[-p][2222][ffuser@login1]"),
    ("login1:2222", "[-p][2222][login1]"),
    ("ffuser@login1", "[ffuser@login1]"),
    ("[::1]:2200", "[-p][2200][::1]"),
])
def test_login_with_user_and_port_becomes_ssh_p(shell: str, login: str, words: str,
                                                tmp_path: Path, recording_ssh: Path) -> None:
    """ssh reads host:2222 as a host name: a port in the login must become -p."""
    spec = AliasSpec(login=login, port=5601)
    proc = call(shell, tmp_path, recording_ssh, "node1", spec=spec)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "ssh-args").read_text() == (
        f"[-t][-L][5601:localhost:5601]{words}[ssh][-L][5601:localhost:5601][node1]")


NODE_NAMES = ["node1", "n_2", "_n", "gpu-01.ib", "10.1.2.3", "a.b.", "n-", "", ".x", "-x",
              "a..b", "a/b", "a:b", "a@b", "x y", "é1", "a*", "N1"]


@pytest.mark.parametrize("shell", SHELLS)
def test_shell_node_check_agrees_with_host_name(shell: str, tmp_path: Path,
                                                recording_ssh: Path) -> None:
    """The generated functions check nodes by the one host-name rule (hostspec.host_name)."""
    for node in NODE_NAMES:
        try:
            host_name(node)
            valid = True
        except ValueError:
            valid = False
        proc = call(shell, tmp_path, recording_ssh, node)
        assert (proc.returncode == 0) == valid, (node, proc.stderr)


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("node", ["", "-oProxyCommand=id", "a;id", "$(id)", "`id`", "a b",
                                  "node1\n", "\nnode1", "node1\nid", ".hidden", "n*", "é1"])
def test_bad_node_is_refused_before_ssh(shell: str, node: str, tmp_path: Path,
                                        recording_ssh: Path) -> None:
    proc = call(shell, tmp_path, recording_ssh, node)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stderr == f"s2firefly: not a node name: {node}\n"
    assert not (tmp_path / "ssh-args").exists()
    assert proc.stdout == ""


@pytest.mark.parametrize("shell", SHELLS)
def test_wrong_argument_count_prints_usage(shell: str, tmp_path: Path,
                                           recording_ssh: Path) -> None:
    for args in ((), ("node1", "node2")):
        proc = call(shell, tmp_path, recording_ssh, *args)
        assert (proc.returncode, proc.stderr) == (2, "usage: s2firefly NODE\n")
        assert not (tmp_path / "ssh-args").exists()


def test_bad_spec_values_are_refused() -> None:
    for spec, message in ((AliasSpec(login="-oProxyCommand=id"), "login = '-oProxyCommand=id'"),
                          (AliasSpec(login="a b"), "login = 'a b'"),
                          (AliasSpec(login="u@h:0"), "login = 'u@h:0'"),
                          (AliasSpec(login="h", name="x;y"), "--name = 'x;y'"),
                          (AliasSpec(login="h", port=0), "--port = 0"),
                          (AliasSpec(login="h", ssh_config="a\nb"), "--ssh-config")):
        with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(")):
            aliases.render_function(spec, "bash")
    with pytest.raises(ConfigError, match="--shell 'csh'"):
        aliases.render_function(AliasSpec(login="h"), "csh")


# -- rc files ----------------------------------------------------------------------------

def test_replace_block_is_idempotent_and_keeps_the_rest() -> None:
    start = "export A=1\n# my stuff\n"
    once = aliases.replace_block(start, "s2firefly", "body 1\n")
    assert once.startswith(start) and once.count("# >>> fireflyhpc s2firefly >>>") == 1
    assert aliases.replace_block(once, "s2firefly", "body 1\n") == once
    twice = aliases.replace_block(once + "export B=2\n", "s2firefly", "body 2\n")
    assert "body 1" not in twice and "body 2" in twice and twice.endswith("export B=2\n")
    other = aliases.replace_block(twice, "s2mine", "mine\n")
    assert "body 2" in other and other.count(">>> fireflyhpc") == 2
    with pytest.raises(ConfigError, match="broken or repeated"):
        aliases.replace_block(start + "# >>> fireflyhpc s2firefly >>>\nx\n", "s2firefly", "b")


def test_rc_file_locations() -> None:
    env = {"HOME": "/h"}
    assert aliases.rc_file("bash", "s2firefly", env) == Path("/h/.bashrc")
    assert aliases.rc_file("zsh", "s2firefly", env) == Path("/h/.zshrc")
    assert aliases.rc_file("zsh", "x", {**env, "ZDOTDIR": "/z"}) == Path("/z/.zshrc")
    assert aliases.rc_file("fish", "s2ff", env) == Path("/h/.config/fish/functions/s2ff.fish")
    assert aliases.rc_file("fish", "s", {**env, "XDG_CONFIG_HOME": "/x"}) == \
        Path("/x/fish/functions/s.fish")


@pytest.mark.parametrize("shell", SHELLS)
def test_cli_install_once_then_replace_then_use(shell: str, clean_env, tmp_path: Path,
                                                recording_ssh: Path) -> None:
    home = Path(clean_env["HOME"])
    rc = aliases.rc_file(shell, "s2firefly", clean_env)
    rc.parent.mkdir(parents=True, exist_ok=True)
    rc.write_text("# the user's own line\n")
    rc.chmod(0o600)
    args = ["alias", "--shell", shell, "--login", "login1", "--install"]
    first = run_cli(*args, env=clean_env)
    assert first.returncode == 0, first.stderr
    assert first.stdout == f"s2firefly: added in {rc}; open a new shell (or source it) to use it\n"
    again = run_cli(*args, env=clean_env)
    assert again.stdout.startswith("s2firefly: unchanged in ")
    third = run_cli(*args, "--port", "7777", env=clean_env)
    assert third.stdout.startswith("s2firefly: replaced in ")
    text = rc.read_text()
    assert text.startswith("# the user's own line\n") and text.count(">>> fireflyhpc") == 1
    assert "7777:localhost:7777" in text and "5500" not in text
    assert rc.stat().st_mode & 0o777 == 0o600
    env = {**clean_env, "PATH": f"{recording_ssh}:{os.environ['PATH']}"}
    proc = subprocess.run(shell_argv(shell, f"source {rc}; s2firefly node2"), env=env,
                          capture_output=True, text=True, timeout=30, cwd=home)
    assert proc.returncode == 0, proc.stderr
    assert "[7777:localhost:7777][node2]" in (tmp_path / "ssh-args").read_text()


def test_cli_rc_file_option_and_profile_login(clean_env, tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('default_cluster = "m"\n[clusters.m]\nlogin = "hpc-login"\n')
    rc = tmp_path / "rc"
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "ssh").write_text("Host hpc-login\n")
    proc = run_cli("--config", str(config), "--ssh-config", "cfg/ssh", "alias", "--shell",
                   "bash", "--install", "--rc-file", str(rc), env=clean_env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = rc.read_text()
    assert f"ssh -F {tmp_path}/cfg/ssh -t -L 5500:localhost:5500 hpc-login ssh" in text
    printed = run_cli("--config", str(config), "alias", "--shell", "fish", "--name", "ffx",
                      env=clean_env).stdout
    assert printed == aliases.render_function(AliasSpec(login="hpc-login", name="ffx"), "fish")


@pytest.mark.parametrize("args,expected", [
    (["--shell", "bash"], "no cluster chosen and no login host given"),
    (["--shell", "bash", "--login", "a b"], "login = 'a b': expected [user@]host[:port]"),
    (["--shell", "bash", "--login", "h", "--name", "a;b"], "--name = 'a;b'"),
    (["--shell", "bash", "--login", "h", "--port", "99999"], "--port = '99999': expected a TCP"),
    (["--shell", "bash", "--login", "h", "--port", "http"], "--port = 'http': expected a TCP"),
    (["--shell", "bash", "--login", "h:http"], "login = 'h:http': expected [user@]host"),
    (["--login", "h"], "cannot tell your shell from SHELL='/bin/tcsh'"),
    (["--shell", "bash", "--cluster", "zz"], "unknown cluster 'zz'"),
])
def test_cli_bad_input_is_one_line(clean_env, args: list[str], expected: str,
                                   tmp_path: Path) -> None:
    env = {**clean_env, "SHELL": "/bin/tcsh"}
    proc = run_cli("alias", *args, env=env)
    assert expected in one_error_line(proc) and proc.returncode == 3


def test_cli_missing_ssh_config_is_refused(clean_env, tmp_path: Path) -> None:
    # It used to print a function running `ssh -F /missing`, failing at every use.
    rc = tmp_path / "rc"
    proc = run_cli("--ssh-config", str(tmp_path / "missing"), "alias", "--shell", "bash",
                   "--login", "h", "--install", "--rc-file", str(rc), env=clean_env)
    assert one_error_line(proc) == f"fireflyhpc: error: SSH config file not found: " \
                                   f"{tmp_path / 'missing'}"
    assert proc.returncode == 3 and proc.stdout == "" and not rc.exists()


def test_cli_install_refuses_broken_block(clean_env, tmp_path: Path) -> None:
    rc = tmp_path / "rc"
    rc.write_text("# >>> fireflyhpc s2firefly >>>\nhalf a block\n")
    proc = run_cli("alias", "--shell", "bash", "--login", "h", "--install", "--rc-file",
                   str(rc), env=clean_env)
    assert "are broken or repeated" in one_error_line(proc)
    assert rc.read_text() == "# >>> fireflyhpc s2firefly >>>\nhalf a block\n"


# -- the real thing: OpenSSH through login1 to node1 ----------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def forwarders(port: int) -> list[psutil.Process]:
    needle = f"{port}:localhost:{port}"
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(needle in part for part in proc.info["cmdline"] or []):
            found.append(proc)
    return found


@pytest.fixture
def node_web(cluster):  # type: ignore[no-untyped-def]
    """A small HTTP server on node1's loopback, run as the bench user; yields (port, text)."""
    port = free_port()
    marker = f"fireflyhpc alias test {os.getpid()} {port}\n"
    folder = f"ff-alias-{port}"
    script = (f"mkdir -p {folder} && printf %s {shlex.quote(marker)} > {folder}/marker.txt && cd {folder} "
              f"&& {{ python3 -m http.server {port} --bind 127.0.0.1 >/dev/null 2>&1 </dev/null"
              " & echo $!; }")
    started = cluster.ssh("node1", ["sh", "-c", script])
    assert started.returncode == 0, started.stderr
    pid = started.stdout.strip()
    try:
        yield port, marker
    finally:
        cluster.ssh("node1", ["sh", "-c", f"kill {pid}; rm -rf {folder}"])


@pytest.mark.cluster
@pytest.mark.parametrize("shell,login_form", [(shell, "alias") for shell in SHELLS]
                         + [("bash", "user@alias:port")])
def test_s2firefly_forwards_through_login_to_node(shell: str, login_form: str, cluster,  # type: ignore[no-untyped-def]
                                                  node_web, tmp_path: Path) -> None:
    """Installed by the real CLI into an rc file, sourced by the real shell, run with the
    real OpenSSH client: a page served only on node1's loopback arrives on localhost.
    The login may carry a user and a port (ssh gets -p)."""
    port, marker = node_web
    rc = tmp_path / "rc"
    login = cluster.login_host if login_form == "alias" else f"{cluster.user}@{cluster.login_host}:22"
    installed = run_cli("--ssh-config", str(cluster.ssh_config), "alias", "--shell", shell,
                        "--login", login, "--port", str(port), "--install",
                        "--rc-file", str(rc))
    assert installed.returncode == 0, installed.stderr
    proc = subprocess.Popen(shell_argv(shell, f"source {rc}; s2firefly node1"),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    body = None
    try:
        for _ in range(120):  # bounded: at most about 60 s
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/marker.txt",
                                            timeout=5) as reply:
                    body = reply.read().decode()
                    break
            except OSError:
                if proc.poll() is not None:
                    break
                time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert body == marker, (out, err)
    assert out.decode().startswith(f"s2firefly: open http://localhost:{port}/")
    for _ in range(40):  # the login node's inner ssh follows once the channel closes
        if not forwarders(port):
            break
        time.sleep(0.25)
    assert forwarders(port) == []
    with socket.socket() as sock:  # no listener is left on the local port
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine
        sock.bind(("127.0.0.1", port))
        sock.listen()
