"""Fixtures of the SSH area: a real loopback sshd with PAM, test users, client configs.

The sshd runs on 127.0.0.1 and a free port with its own host key, authorized_keys and
pid file in a temporary directory. It uses Debian's PAM service ``sshd`` (pam_unix), so
keyboard-interactive really asks ``Password: `` and password authentication checks
/etc/shadow. Users (created once, removed at the end):

- ``ffssh-key``: key or password;
- ``ffssh-2fa``: needs a key AND keyboard-interactive (``AuthenticationMethods
  publickey,keyboard-interactive``), the shape of a two-factor login.

Every test gets a HOME of its own and no ssh-agent, so nothing reads the real ~/.ssh.
"""

from __future__ import annotations

import dataclasses
import http.server
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from ssh_testutil import free_port, keygen, stop_process

SSHD = "/usr/sbin/sshd"
USERS = ("ffssh-key", "ffssh-2fa", "ffssh-tcsh", "ffssh-fish")
# Login shells other than bash, as many HPC users have (sshd runs commands with them).
LOGIN_SHELLS = {"ffssh-tcsh": "/usr/bin/tcsh", "ffssh-fish": "/usr/bin/fish"}


def _require_root_sshd() -> None:
    reason = None
    if os.geteuid() != 0:
        reason = "the loopback sshd tests need root (test users, PAM)"
    elif not os.access(SSHD, os.X_OK) or shutil.which("ssh-keygen") is None:
        reason = "the loopback sshd tests need openssh-server and openssh-client"
    if reason:
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(f"CI=true but {reason}", pytrace=False)
        pytest.skip(reason)


@dataclasses.dataclass
class LoopbackSSHD:
    """A running loopback sshd and what clients need to use it."""

    dir: Path
    port: int
    host_key_line: str  # "ssh-ed25519 AAAA..."
    passwords: dict[str, str]
    keys: dict[str, Path]
    process: subprocess.Popen
    limited_port: int = 0  # the same sshd, with MaxSessions 1

    def known_hosts_line(self, name: str = "127.0.0.1", port: int | None = None) -> str:
        return f"[{name}]:{port or self.port} {self.host_key_line}\n"

    def authorize(self, user: str, public_key: Path) -> None:
        path = self.dir / "authorized_keys" / user
        with path.open("a") as handle:
            handle.write(public_key.read_text())


def _make_user(name: str, password: str) -> None:
    shell = LOGIN_SHELLS.get(name, "/bin/bash")
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", shell, name], check=True)
    else:
        subprocess.run(["usermod", "--shell", shell, name], check=True)
    subprocess.run(["chpasswd"], input=f"{name}:{password}\n", text=True, check=True)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackSSHD]:
    """A real sshd on 127.0.0.1 for the whole session (see module docstring)."""
    _require_root_sshd()
    # Not under pytest's 0700 tmp root: sshd reads authorized_keys as the user.
    base = Path(tempfile.mkdtemp(prefix="fireflyhpc-sshd-"))
    base.chmod(0o755)
    keygen(base / "host_ed25519")
    (base / "authorized_keys").mkdir(mode=0o755)
    passwords = {user: "pw-" + secrets.token_hex(8) for user in USERS}
    keys = {}
    for user in USERS:
        _make_user(user, passwords[user])
        keys[user] = keygen(base / f"id_{user}")
        (base / "authorized_keys" / user).write_text((base / f"id_{user}.pub").read_text())
    port, limited_port = free_port(), free_port()
    (base / "sshd_config").write_text(
        f"HostKey {base}/host_ed25519\n"
        f"AuthorizedKeysFile {base}/authorized_keys/%u\n"
        f"PidFile {base}/sshd.pid\n"
        "UsePAM yes\nKbdInteractiveAuthentication yes\nPasswordAuthentication yes\n"
        f"StrictModes no\nPrintMotd no\nAllowUsers {' '.join(USERS)}\n"
        "AllowTcpForwarding yes\nSubsystem sftp internal-sftp\n"
        "Match User ffssh-2fa\n  AuthenticationMethods publickey,keyboard-interactive\n"
        # A second port where only one session per connection is allowed.
        f"Match LocalPort {limited_port}\n  MaxSessions 1\n")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    log = (base / "sshd.log").open("w")
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(base / "sshd_config"),
                                "-o", f"Port={port}", "-o", f"Port={limited_port}",
                                "-o", "ListenAddress=127.0.0.1"],
                               stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        _wait_listening(port, process, base / "sshd.log")
        _wait_listening(limited_port, process, base / "sshd.log")
        key_line = " ".join((base / "host_ed25519.pub").read_text().split()[:2])
        yield LoopbackSSHD(base, port, key_line, passwords, keys, process, limited_port)
    finally:
        stop_process(process)
        log.close()
        leftovers = _wait_no_processes(USERS)
        for user in USERS:
            subprocess.run(["userdel", "--remove", user], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
        if leftovers:
            pytest.fail(f"SSH sessions left running after the tests: {leftovers}")


@dataclasses.dataclass
class CertSSHD:
    """A second loopback sshd that trusts certificates only: its host key is signed by
    ``host_ca`` (clients trust it through an ``@cert-authority`` line alone) and it
    accepts ``ffssh-key`` only with a key signed by ``user_ca`` (no authorized_keys)."""

    dir: Path
    port: int
    host_ca_pub: Path
    user_key: Path  # its certificate is user_key + "-cert.pub"
    plain_key: Path  # a key without certificate

    def config(self, tmp_path: Path, *, certificate: bool = True, ca_line: bool = True) -> Path:
        """An ssh_config with Host ``certhost`` and a known_hosts of ``@cert-authority``
        alone (or nothing with ``ca_line`` False); without ``certificate``, the key
        has none (OpenSSH would find ``KEY-cert.pub`` next to a key by itself)."""
        kh = tmp_path / "cert_known_hosts"
        ca = " ".join(self.host_ca_pub.read_text().split()[:2])
        kh.write_text(f"@cert-authority [127.0.0.1]:{self.port} {ca}\n" if ca_line else "")
        key = self.user_key if certificate else self.plain_key
        cert = f"    CertificateFile {key}-cert.pub\n" if certificate else ""
        path = tmp_path / "cert_ssh_config"
        path.write_text(f"Host certhost\n    HostName 127.0.0.1\n    Port {self.port}\n"
                        f"    User ffssh-key\n    IdentityFile {key}\n"
                        f"{cert}    IdentitiesOnly yes\n    UserKnownHostsFile {kh}\n"
                        "    GlobalKnownHostsFile /dev/null\n    ConnectTimeout 10\n")
        return path


@pytest.fixture(scope="session")
def cert_sshd(sshd: LoopbackSSHD) -> Iterator[CertSSHD]:
    """The certificate-only sshd of :class:`CertSSHD` (users come from ``sshd``)."""
    base = Path(tempfile.mkdtemp(prefix="fireflyhpc-certsshd-"))
    base.chmod(0o755)
    for name in ("host_key", "host_ca", "user_ca", "user_key", "plain_key"):
        keygen(base / name)
    sign = ["ssh-keygen", "-q", "-V", "-5m:+1d"]
    subprocess.run([*sign, "-s", str(base / "host_ca"), "-I", "loopback-host", "-h", "-n",
                    "127.0.0.1", str(base / "host_key.pub")], check=True, capture_output=True)
    subprocess.run([*sign, "-s", str(base / "user_ca"), "-I", "ffssh-key", "-n", "ffssh-key",
                    str(base / "user_key.pub")], check=True, capture_output=True)
    port = free_port()
    (base / "sshd_config").write_text(
        f"HostKey {base}/host_key\nHostCertificate {base}/host_key-cert.pub\n"
        f"TrustedUserCAKeys {base}/user_ca.pub\nAuthorizedKeysFile none\n"
        f"PidFile {base}/sshd.pid\nUsePAM no\nKbdInteractiveAuthentication no\n"
        "PasswordAuthentication no\nStrictModes no\nPrintMotd no\nAllowUsers ffssh-key\n"
        "AllowTcpForwarding yes\n")
    log = (base / "sshd.log").open("w")
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(base / "sshd_config"),
                                "-o", f"Port={port}", "-o", "ListenAddress=127.0.0.1"],
                               stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        _wait_listening(port, process, base / "sshd.log")
        yield CertSSHD(base, port, base / "host_ca.pub", base / "user_key", base / "plain_key")
    finally:
        stop_process(process)
        log.close()
        shutil.rmtree(base, ignore_errors=True)


def _wait_no_processes(users: tuple[str, ...]) -> list[str]:
    """Wait (bounded) until the test users run nothing; kill and return what is left."""
    left: list[str] = []
    for _ in range(100):
        left = [line for user in users for line in subprocess.run(
            ["pgrep", "-a", "-u", user], capture_output=True, text=True).stdout.splitlines()]
        if not left:
            return []
        time.sleep(0.1)
    for line in left:
        subprocess.run(["kill", "-9", line.split()[0]], capture_output=True)
    return left


def _wait_listening(port: int, process: subprocess.Popen, log: Path) -> None:
    for _ in range(100):
        if process.poll() is not None:
            pytest.fail(f"sshd exited: {log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"sshd did not listen on port {port}: {log.read_text()}")


@pytest.fixture
def web() -> Iterator[int]:
    """A local HTTP server answering "hello" (its port): the far end of a direct-hop tunnel."""
    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.write(b"hello")

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh HOME and no ssh-agent for every test of this area."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return home


@pytest.fixture
def make_config(tmp_path: Path, sshd: LoopbackSSHD) -> Callable[..., Path]:
    """Write an ssh_config with Host ``target`` -> the loopback sshd; return its path.

    ``known_hosts`` True writes the right host key; a string is written as the file.
    ``extra`` lines go into the Host block; ``more`` is appended as is.
    """
    def make(user: str = "ffssh-key", *, identity: Path | None | bool = True,
             identities_only: bool = True,
             known_hosts: bool | str = True, extra: str = "", more: str = "") -> Path:
        kh = tmp_path / "known_hosts"
        if known_hosts is True:
            kh.write_text(sshd.known_hosts_line())
        elif isinstance(known_hosts, str):
            kh.write_text(known_hosts)
        if identity is True:
            identity = sshd.keys[user]
        ident = f"    IdentityFile {identity}\n" if identity else ""
        text = (f"Host target\n    HostName 127.0.0.1\n    Port {sshd.port}\n    User {user}\n"
                f"{ident}    IdentitiesOnly {'yes' if identities_only else 'no'}\n"
                f"    UserKnownHostsFile {kh}\n"
                f"    GlobalKnownHostsFile /dev/null\n    ConnectTimeout 10\n{extra}\n{more}\n")
        path = tmp_path / "ssh_config"
        path.write_text(text)
        return path

    return make


@pytest.fixture(autouse=True)
def no_leaked_transports() -> Iterator[None]:
    """Every paramiko Transport a test started has stopped when it ends."""
    import threading

    import paramiko

    before = {t for t in threading.enumerate() if isinstance(t, paramiko.Transport)}
    yield
    for _ in range(50):
        alive = [t for t in threading.enumerate()
                 if isinstance(t, paramiko.Transport) and t not in before and t.is_alive()]
        if not alive:
            return
        time.sleep(0.1)
    pytest.fail(f"{len(alive)} paramiko transport thread(s) still running after the test")
