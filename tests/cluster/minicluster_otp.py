"""A two-factor login node for the mini cluster: a second sshd on login1 that asks a
one-time code after the key, as HPC centres do (``AuthenticationMethods
publickey,keyboard-interactive``, a PAM module checking the code).

Started on demand next to the running bench by whoever needs it (a test fixture, the
tunnel benchmark) and stopped by them; the bench itself is not changed. sshd names its
PAM service after its own program name, so the second sshd runs as a symlink to sshd
with a service name of its own: /etc/pam.d/sshd and every other sshd are untouched
(other test sessions share this machine). The code lives in a root-only file that the
PAM checker reads; the user's answer reaches the checker on its stdin.

Clients reach it as ``login1-otp`` in :attr:`OtpLogin.ssh_config` (the bench's config
plus that Host block). It presents login1's own host key, known under the name
``login1``: the block says ``HostKeyAlias login1`` on its non-22 port.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from minicluster_layout import Layout, render_sshd_config
from minicluster_net import as_host, in_netns, tcp_open, wait_for

ALIAS = "login1-otp"
# pam_exec passes the answer (PAM's authtok) on stdin; the code file is root's alone.
CHECKER = """#!/bin/sh
IFS= read -r answer
[ -n "$answer" ] && [ "$answer" = "$(cat "$(dirname "$0")/code")" ]
"""


@dataclass
class OtpLogin:
    """The running two-factor sshd and how to reach it."""

    port: int
    code: str
    ssh_config: Path
    service: str
    workdir: Path
    proc: subprocess.Popen[bytes]
    alias: str = ALIAS

    def control_config(self, control_dir: Path) -> Path:
        """A copy of :attr:`ssh_config` that multiplexes ``login1-otp`` the way centres
        with two-factor logins tell their users to (ControlMaster auto, ControlPersist);
        ``control_dir`` short: a socket path has room for about 100 bytes."""
        path = self.workdir / f"ssh_config-cm-{secrets.token_hex(3)}"
        lines = (f"    ControlMaster auto\n    ControlPath {control_dir}/cm-%C\n"
                 "    ControlPersist 10m\n")
        path.write_text(self.ssh_config.read_text().replace(
            f"Host {ALIAS}\n", f"Host {ALIAS}\n{lines}", 1))
        path.chmod(0o644)
        return path

    def stop(self) -> None:
        """End the sshd and every session it started; remove its PAM service and files."""
        import psutil

        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for child in children:
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        Path("/etc/pam.d", self.service).unlink(missing_ok=True)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _free_port(netns: str) -> int:
    code = "import socket\ns = socket.socket()\ns.bind(('', 0))\nprint(s.getsockname()[1])\n"
    done = subprocess.run(in_netns(netns, ["python3", "-c", code]), capture_output=True,
                          text=True, timeout=30, check=True)
    return int(done.stdout)


def _client_block(layout: Layout, port: int) -> str:
    return (f"Host {ALIAS}\n    HostName {layout.login.addr}\n    Port {port}\n"
            f"    HostKeyAlias {layout.login.name}\n    User {layout.user}\n"
            f"    IdentityFile {layout.key(layout.user)}\n    IdentitiesOnly yes\n"
            f"    UserKnownHostsFile {layout.known_hosts}\n    GlobalKnownHostsFile /dev/null\n"
            "    StrictHostKeyChecking yes\n"
            "    PreferredAuthentications publickey,keyboard-interactive\n"
            "    ConnectTimeout 10\n\n")


def start_otp_login(bench_dir: Path, code: str | None = None) -> OtpLogin:
    """Start the two-factor sshd on login1 (a free port there) and return it."""
    layout = Layout(dir=bench_dir, cgroup_v2=Path("/sys/fs/cgroup/cgroup.controllers").exists())
    login = layout.login
    code = code or f"{secrets.randbelow(10**6):06d}"
    workdir = Path(tempfile.mkdtemp(prefix="ffhpc-otp-"))
    workdir.chmod(0o755)  # sshd (root) reads it; nothing secret is readable by others
    service = f"ffhpc-otp-{secrets.token_hex(3)}"
    try:
        fd = os.open(workdir / "code", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(code + "\n")
        checker = workdir / "check"
        checker.write_text(CHECKER)
        checker.chmod(0o755)
        Path("/etc/pam.d", service).write_text(
            f"auth required pam_exec.so expose_authtok quiet {checker}\n"
            # pam_setcred() fails without a module that sets credentials (minicluster.md)
            "auth required pam_permit.so\n"
            "account required pam_permit.so\nsession required pam_permit.so\n")
        program = workdir / service  # sshd's PAM service is its program name
        program.symlink_to("/usr/sbin/sshd")
        port = _free_port(login.netns)
        config = render_sshd_config(layout, login)
        config = config.replace("Port 22\n", f"Port {port}\n")
        config = "\n".join(f"PidFile {workdir / 'sshd.pid'}" if line.startswith("PidFile ")
                           else line for line in config.splitlines()) + "\n"
        config = config.replace("KbdInteractiveAuthentication no", "KbdInteractiveAuthentication "
                                "yes").replace("UsePAM no", "UsePAM yes")
        config += "AuthenticationMethods publickey,keyboard-interactive\n"
        (workdir / "sshd_config").write_text(config)
        log = (workdir / "sshd.log").open("ab")
        proc = subprocess.Popen(as_host(login, [str(program), "-D", "-e", "-f",
                                                str(workdir / "sshd_config")]),
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True, cwd="/")
        log.close()
        otp = OtpLogin(port, code, workdir / "ssh_config", service, workdir, proc)
        try:
            wait_for(f"the two-factor sshd on {login.name} port {port}",
                     lambda: proc.poll() is not None or tcp_open(login.netns, login.addr, port),
                     20)
            if proc.poll() is not None:
                raise RuntimeError(f"two-factor sshd exited: {(workdir / 'sshd.log').read_text()}")
            otp.ssh_config.write_text(_client_block(layout, port) + layout.ssh_config.read_text())
            otp.ssh_config.chmod(0o644)
        except BaseException:
            otp.stop()
            raise
        return otp
    except BaseException:
        Path("/etc/pam.d", service).unlink(missing_ok=True)
        shutil.rmtree(workdir, ignore_errors=True)
        raise


__all__ = ["ALIAS", "OtpLogin", "start_otp_login"]
