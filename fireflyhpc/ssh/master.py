"""OpenSSH ControlMaster processes: starting one under a guard, checking, closing.

The one implementation used by both :mod:`fireflyhpc.ssh.openssh` (commands, files,
remote processes) and :mod:`fireflyhpc.tunnel.openssh` (forwards). A master we start
runs as ``ssh -M -N -S CONTROL`` under a small ``sh`` guard whose stdin is a pipe from
this process: closing the pipe ends ssh, and so does our death, however abrupt
(SIGKILL included). Clients of a master (``ssh -S CONTROL ...``) never dial by
themselves; see :meth:`OpenSSHOptions.mux`.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Mapping

from fireflyhpc import terminal
from fireflyhpc.errors import SSHError
from fireflyhpc.ssh.sshmsg import ssh_error_from_stderr

log = logging.getLogger(__name__)

ALIVE_INTERVAL = 3  # seconds; ssh gives up on a silent path after about 3 intervals
ALIVE_COUNT = 2
READY_TIMEOUT = 60.0
CIPHERS = "^aes128-gcm@openssh.com,aes256-gcm@openssh.com"
# Control sockets are named CONTROL_PREFIX + a number inside a private (0700) directory.
CONTROL_PREFIX = "ctl-"
# A Unix socket path has room for 104 (macOS) to 108 (Linux) bytes; ssh adds a
# 17-byte suffix while it binds, and our names take about 30 more.
_SOCKET_ROOM = 104 - 17 - 30
# Lines of a master's stderr that are not messages for the user.
_NOISE = ("debug", "Warning: Permanently added", "Transferred: ", "Authenticated to ")


def find_ssh() -> str | None:
    """The system ``ssh`` client, or None if there is none."""
    return shutil.which("ssh")


_version_cache: dict[str, tuple[int, int] | None] = {}


def ssh_version(ssh: str) -> tuple[int, int] | None:
    """(major, minor) of the OpenSSH client ``ssh`` (``ssh -V``), None if not OpenSSH."""
    if ssh not in _version_cache:
        try:
            done = subprocess.run([ssh, "-V"], capture_output=True, text=True, timeout=10,
                                  stdin=subprocess.DEVNULL)
            found = re.search(r"OpenSSH_(?:for_Windows_)?(\d+)\.(\d+)", done.stderr + done.stdout)
        except (OSError, subprocess.SubprocessError):
            found = None
        _version_cache[ssh] = (int(found.group(1)), int(found.group(2))) if found else None
    return _version_cache[ssh]


def can_multiplex(ssh: str | None) -> bool:
    """True if ``ssh`` is an OpenSSH client with working ControlMaster (not Windows')."""
    return ssh is not None and sys.platform != "win32" and ssh_version(ssh) is not None


@dataclass(frozen=True)
class OpenSSHOptions:
    """How to run ``ssh``: its binary, the user's config file, the host key policy."""

    ssh: str
    ssh_config: str | None = None
    strict_host_keys: str | None = None  # StrictHostKeyChecking to force; None: the config's

    def client(self) -> list[str]:
        """``ssh`` with the user's config (what the user's own ``ssh`` would read)."""
        return [self.ssh, "-F", self.ssh_config] if self.ssh_config else [self.ssh]

    def master(self, control: str) -> list[str]:
        """Argv prefix of a master we own at ``control`` (keepalive, GCM first, no
        forwards of the user's config, never persisting after us)."""
        argv = [*self.client(), "-M", "-N", "-v", "-S", control]
        if self.strict_host_keys:
            argv += ["-o", f"StrictHostKeyChecking={self.strict_host_keys}"]
        for opt in (f"ServerAliveInterval={ALIVE_INTERVAL}", f"ServerAliveCountMax={ALIVE_COUNT}",
                    f"Ciphers={CIPHERS}", "ClearAllForwardings=yes", "ExitOnForwardFailure=yes",
                    "RequestTTY=no", "ControlMaster=yes", "ControlPersist=no",
                    "PermitLocalCommand=no"):
            argv += ["-o", opt]
        return argv

    def mux(self, control: str) -> list[str]:
        """Argv prefix of a client of the master at ``control``; never dials by itself."""
        return [self.ssh, "-F", "/dev/null", "-S", control, "-o", "ControlMaster=no",
                "-o", "ProxyCommand=false", "-o", "BatchMode=yes"]


def check_control(mux_prefix: list[str], timeout: float = 5.0) -> bool:
    """True if a master answers ``ssh -O check`` on the control socket of ``mux_prefix``."""
    try:
        done = subprocess.run([*mux_prefix, "-O", "check", "mux"], capture_output=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    except (subprocess.TimeoutExpired, OSError):
        return False
    return done.returncode == 0


# Runs ssh ("$@") under a guard that reads our end of a pipe. The guard's shell exits
# with ssh's status when ssh exits. Its watcher, a background part, stays until the
# pipe has something to say: a line "close" (Master.close: end ssh, nothing else; the
# private directory is the caller's) or EOF without one (this process died, even by
# SIGKILL): then it ends ssh, removes the control socket and, once no other master's
# socket is left, the private directory with the askpass files. A master that dies by
# itself (a lost link, a restarted sshd) thus leaves the directory in place, and a
# reconnect binds its new socket there.
# (A background list's stdin is /dev/null in sh, hence fd 3. Ctrl-C is ours to handle:
# the guard and ssh ignore SIGINT, and we close them in order.)
_GUARD = r"""
trap '' INT
exec 3<&0
"$@" </dev/null 3<&- &
ssh=$!
{
    cue=
    read -r cue <&3
    kill -TERM "$ssh" 2>/dev/null
    [ "$cue" = close ] && exit 0
    while kill -0 "$ssh" 2>/dev/null; do sleep 0.1; done
    rm -f -- "$FIREFLYHPC_CONTROL"
    dir=${FIREFLYHPC_CONTROL%/*}
    for other in "$dir"/ctl-*; do
        [ -e "$other" ] && exit 0
    done
    rm -f -- "$dir/askpass" "$dir/askpass.sock"
    rmdir -- "$dir"
} </dev/null >/dev/null 2>&1 &
exec 3<&-
status=0
wait "$ssh" || status=$?
rm -f -- "$FIREFLYHPC_CONTROL"
exit "$status"
"""


def private_dir_base(tmp: str) -> str:
    """Where the private directory of control sockets goes (pure): the temporary
    directory, unless its path is too long for a socket path (macOS's
    /var/folders/...), then /tmp."""
    return tmp if len(tmp) <= _SOCKET_ROOM else "/tmp"


def has_terminal() -> bool:
    """True if this process has a controlling terminal ssh could ask on."""
    try:
        with open("/dev/tty", "rb"):
            return True
    except OSError:
        return False


class Master:
    """One ``ssh -M -N`` process with its control socket; stderr goes to the log.

    The process is a small ``sh`` guard around ssh (see ``_GUARD``) whose stdin is a
    pipe from us: closing it ends ssh, and so does our death, however abrupt.
    """

    def __init__(self, argv: list[str], control: str, label: str,
                 env: Mapping[str, str] | None = None) -> None:
        self.control = control
        self.label = label
        self._stderr: list[str] = []
        self._seen = 0  # lines read so far (the list keeps the last few hundred)
        self._messages: list[str] = []  # what the server said while logging in
        self._logged_in = False
        self._lock = threading.Lock()
        log.debug("starting %s", shlex.join(argv))
        # With a terminal, ssh must share it to ask for a passphrase or a one-time
        # code (it reads /dev/tty); it ignores the Ctrl-C that reaches it there.
        # Without one, a session of its own keeps it out of our process group.
        if has_terminal():  # it may ask: not at the end of our progress line
            terminal.before_prompt()
        self.proc = subprocess.Popen(["sh", "-c", _GUARD, "sh", *argv], stdin=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=not has_terminal(),
                                     env={**os.environ, **(env or {}),
                                          "FIREFLYHPC_CONTROL": control})
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            with self._lock:
                self._stderr.append(line)
                self._seen += 1
                del self._stderr[:-400]
                self._logged_in = self._logged_in or "Authenticated to " in line
                if not self._logged_in and line and not line.startswith(_NOISE):
                    self._messages.append(line)
            log.debug("ssh %s: %s", self.label, line)

    def stderr_lines(self) -> list[str]:
        """What ssh printed so far (the last few hundred lines)."""
        with self._lock:
            return list(self._stderr)

    def take_messages(self) -> str:
        """What the server said while logging in (its instructions before a one-time
        code, say) since the last call; debug output and anything after the login
        (such as logged commands) left out."""
        with self._lock:
            new, self._messages = self._messages, []
        return "\n".join(new)

    def used_interactive_auth(self) -> bool:
        """True if ssh went on to keyboard-interactive or password authentication
        (then the user was asked something, on the terminal or through askpass)."""
        return any(re.search(r"Next authentication method: (keyboard-interactive|password)",
                             line) for line in self.stderr_lines())

    def wait_ready(self, mux_prefix: list[str], timeout: float = READY_TIMEOUT,
                   cancel: threading.Event | None = None) -> None:
        """Return once the master answers ``-O check``; raise SSHError if it exits,
        takes longer than ``timeout``, or ``cancel`` is set (the master is stopped)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cancel is not None and cancel.is_set():
                self.close()
                raise SSHError(f"ssh to {self.label} cancelled")
            if self.proc.poll() is not None:
                self._reader.join(timeout=2)
                raise ssh_error_from_stderr(self.label, self.stderr_lines())
            if os.path.exists(self.control) and self.check(mux_prefix):
                return
            time.sleep(0.01)  # the socket appears once ssh has logged in
        self.close()
        raise SSHError(f"ssh to {self.label} did not finish connecting within {timeout:g} s")

    def check(self, mux_prefix: list[str], timeout: float = 5.0) -> bool:
        """True if the master process lives and answers on its control socket."""
        return self.proc.poll() is None and check_control(mux_prefix, timeout)

    def alive(self) -> bool:
        """True while the master process runs (no round trip)."""
        return self.proc.poll() is None

    def lines_seen(self) -> int:
        """How many stderr lines ssh printed so far (a mark for :meth:`last_open_failure`)."""
        with self._lock:
            return self._seen

    def last_open_failure(self, since: int = 0) -> str | None:
        """Why the master's most recent channel open failed, if it said so after line
        ``since`` (a :meth:`lines_seen` value)."""
        with self._lock:
            new = self._stderr[max(0, len(self._stderr) - (self._seen - since)):]
        for line in reversed(new[-40:]):
            match = re.search(r"open failed: (.*)$", line)
            if match:
                return match.group(1)
        return None

    def open_failure(self, since: int, patience: float = 0.5) -> str | None:
        """:meth:`last_open_failure` after ``since``, waiting up to ``patience`` seconds
        for the line: the master writes it as the refusal arrives, its client may be
        quicker to exit."""
        deadline = time.monotonic() + patience
        while (why := self.last_open_failure(since)) is None and time.monotonic() < deadline:
            time.sleep(0.02)
        return why

    def close(self) -> None:
        """Terminate the master (and with it its connection); idempotent."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:  # the guard's cue: SIGTERM to ssh, the private directory left to us
                self.proc.stdin.write(b"close\n")
                self.proc.stdin.flush()
            except OSError:
                pass
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # ssh ignores SIGTERM: kill it and its guard
            import psutil

            try:
                for child in psutil.Process(self.proc.pid).children(recursive=True):
                    child.kill()
            except psutil.Error:
                pass
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=2)


__all__ = ["CIPHERS", "CONTROL_PREFIX", "Master", "OpenSSHOptions", "can_multiplex",
           "check_control", "find_ssh", "has_terminal", "private_dir_base", "ssh_version"]
