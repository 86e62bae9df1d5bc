"""The OpenSSH backend: paths made of system ``ssh`` ControlMaster processes.

Our Python listener stays bound; each accepted connection is handed to a
multiplexing client ``ssh -S CTL -W HOST:PORT``, with the client socket as its
stdin and stdout. The mux client passes those descriptors to the master, and
the master moves the bytes itself: no Python on the data path, and OpenSSH's
C crypto (AES-GCM preferred) on every hop.

- ``direct`` hop: one master to the login node; ``-W NODE:PORT`` per connection.
- ``ssh`` hop: a second master to the node whose ProxyCommand is a mux client
  ``-W NODE:22`` of the login master (one login connection, so one 2FA prompt);
  ``-W localhost:PORT`` per connection.

Liveness: masters run with ``ServerAliveInterval``/``CountMax`` so a dead path
makes them exit; :meth:`OpenSSHPath.probe` also asks each master ``-O check``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shlex
import shutil
import socket
import struct
import subprocess
import tempfile
import termios
import threading
import time
from dataclasses import dataclass

from fireflyhpc import terminal
from fireflyhpc.errors import SSHError
from fireflyhpc.tunnel.engine import PathBroken, TargetRefused
from fireflyhpc.tunnel.sshmsg import NodeSSHError, ssh_error_from_stderr
from fireflyhpc.validate import host_spec

log = logging.getLogger(__name__)

ALIVE_INTERVAL = 3  # seconds; ssh gives up on a silent path after about 3 intervals
ALIVE_COUNT = 2
READY_TIMEOUT = 60.0
# What a mux client says when it never reached the master (so no byte moved).
_NOT_STARTED = ("Control socket connect", "mux_client_hello", "Connection closed by UNKNOWN",
                "kex_exchange_identification", "cannot run ssh")
CIPHERS = "^aes128-gcm@openssh.com,aes256-gcm@openssh.com"


def find_ssh() -> str | None:
    """The system ``ssh`` client, or None if there is none."""
    return shutil.which("ssh")


@dataclass(frozen=True)
class OpenSSHOptions:
    """How to run ``ssh``: its binary, config file, and host key policy."""

    ssh: str
    ssh_config: str | None = None
    accept_new_host_key: bool = False

    def base(self) -> list[str]:
        """Options every master gets (config, host keys, keepalive, ciphers)."""
        argv = [self.ssh]
        if self.ssh_config:
            argv += ["-F", self.ssh_config]
        strict = "accept-new" if self.accept_new_host_key else "yes"
        for opt in (f"StrictHostKeyChecking={strict}", f"ServerAliveInterval={ALIVE_INTERVAL}",
                    f"ServerAliveCountMax={ALIVE_COUNT}", f"Ciphers={CIPHERS}",
                    "ClearAllForwardings=yes", "ExitOnForwardFailure=yes", "RequestTTY=no",
                    "ControlMaster=yes", "ControlPersist=no", "PermitLocalCommand=no"):
            argv += ["-o", opt]
        return argv

    def mux(self, control: str) -> list[str]:
        """Argv prefix of a client of the master at ``control``; never dials by itself."""
        return [self.ssh, "-F", "/dev/null", "-S", control, "-o", "ControlMaster=no",
                "-o", "ProxyCommand=false", "-o", "BatchMode=yes"]


# Runs ssh ("$@") under a guard that reads our end of a pipe: if this process dies,
# even by SIGKILL, the pipe reads EOF and the guard ends ssh, then removes the control
# socket and, once it is empty, the control directory. Exits with ssh's status when
# ssh exits by itself.
# (A background list's stdin is /dev/null in sh, hence fd 3. Ctrl-C is ours to handle:
# the guard and ssh ignore SIGINT, and we close them in order.)
_GUARD = r"""
trap '' INT
exec 3<&0
"$@" </dev/null 3<&- &
ssh=$!
{ read -r _ <&3; kill -TERM "$ssh" 2>/dev/null; } &
guard=$!
exec 3<&-
status=0
wait "$ssh" || status=$?
kill "$guard" 2>/dev/null
rm -f -- "$FIREFLYHPC_CONTROL"
rmdir -- "${FIREFLYHPC_CONTROL%/*}" 2>/dev/null
exit "$status"
"""


class Master:
    """One ``ssh -M -N`` process with its control socket; stderr goes to the log.

    The process is a small ``sh`` guard around ssh (see ``_GUARD``) whose stdin is a
    pipe from us: closing it ends ssh, and so does our death, however abrupt.
    """

    def __init__(self, argv: list[str], control: str, label: str) -> None:
        self.control = control
        self.label = label
        self._stderr: list[str] = []
        log.debug("starting %s", shlex.join(argv))
        # With a terminal, ssh must share it to ask for a passphrase or a one-time
        # code (it reads /dev/tty); it ignores the Ctrl-C that reaches it there.
        # Without one, a session of its own keeps it out of our process group.
        shares_terminal = _has_terminal()
        if shares_terminal:  # it may ask: not at the end of our progress line
            terminal.before_prompt()
        self.proc = subprocess.Popen(["sh", "-c", _GUARD, "sh", *argv], stdin=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=not shares_terminal,
                                     env={**os.environ, "FIREFLYHPC_CONTROL": control})
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            self._stderr.append(line)
            del self._stderr[:-400]
            log.debug("ssh %s: %s", self.label, line)

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
                raise ssh_error_from_stderr(self.label, self._stderr)
            if os.path.exists(self.control) and self.check(mux_prefix):
                return
            time.sleep(0.05)
        self.close()
        raise SSHError(f"ssh to {self.label} did not finish connecting within {timeout:g} s")

    def check(self, mux_prefix: list[str], timeout: float = 5.0) -> bool:
        """True if the master process lives and answers on its control socket."""
        if self.proc.poll() is not None:
            return False
        try:
            done = subprocess.run([*mux_prefix, "-O", "check", "mux"], capture_output=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return done.returncode == 0

    def last_open_failure(self) -> str | None:
        """Why the master's most recent channel open failed, if it said so."""
        for line in reversed(self._stderr[-40:]):
            match = re.search(r"open failed: (.*)$", line)
            if match:
                return match.group(1)
        return None

    def close(self) -> None:
        """Terminate the master (and with it its connection); idempotent."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()  # the guard's cue: SIGTERM to ssh
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


class OpenSSHPath:
    """A path of one or two masters; connections are stdio forwards of the last."""

    def __init__(self, masters: list[Master], options: OpenSSHOptions, target: tuple[str, int],
                 description: str, workdir: str) -> None:
        self._masters = masters
        self._options = options
        self._target = target
        self._workdir = workdir
        self._mux = options.mux(masters[-1].control)
        self.description = description

    def forward(self, sock: socket.socket) -> None:
        """Hand ``sock`` to a mux client of the last master; wait until it ends."""
        proc = self._spawn(sock)
        _, err = proc.communicate()
        # Raises (leaving sock open for the engine to answer or retry) only if the
        # master never touched the connection.
        self._judge(proc.returncode, err, untouched=untouched(sock) and not _at_eof(sock))
        _close(sock)

    def check_target(self, settle: float = 3.0) -> None:
        """Open one stdio forward to the target and end it; see :class:`Path`.

        A refusal comes back at once; a forward still open after ``settle``
        seconds (a server that ignores EOF) counts as success.
        """
        ours, theirs = socket.socketpair()
        try:
            ours.shutdown(socket.SHUT_WR)  # EOF as soon as the channel is open
            proc = self._spawn(theirs)
            try:
                _, err = proc.communicate(timeout=settle)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                return
            self._judge(proc.returncode, err, untouched=False)
        finally:
            _close(ours)
            _close(theirs)

    def _spawn(self, sock: socket.socket) -> subprocess.Popen[bytes]:
        host, port = self._target
        argv = [*self._mux, "-W", f"{host}:{port}", "mux"]
        try:
            return subprocess.Popen(argv, stdin=sock.fileno(), stdout=sock.fileno(),
                                    stderr=subprocess.PIPE)
        except OSError as exc:
            raise PathBroken(f"cannot run ssh: {exc}") from exc

    def _judge(self, returncode: int, err: bytes, *, untouched: bool) -> None:
        """Raise TargetRefused/PathBroken for a mux client that never forwarded anything.

        ``untouched``: no byte of the connection was read or written by the
        master, so it may be answered locally or retried on another path.
        """
        text = err.decode("utf-8", "replace").strip()
        if returncode == 0 and not untouched:
            return
        if "open refused" in text or "open failed" in text:
            raise TargetRefused(self._refusal_reason())
        if untouched or any(marker in text for marker in _NOT_STARTED):
            raise PathBroken(text.splitlines()[-1] if text else f"ssh exited {returncode}")
        # The forward was running and ended badly (the master died mid-way): the
        # connection is over; the supervisor's probe notices a dead path.
        log.debug("forward ended: %s", text or f"ssh exited {returncode}")

    def _refusal_reason(self) -> str:
        """The master logs why a channel failed ("connect failed: Connection refused")."""
        time.sleep(0.05)  # the master writes its line as the refusal arrives
        return self._masters[-1].last_open_failure() or "the channel was refused"

    def probe(self, timeout: float) -> None:
        """Raise PathBroken unless every master is alive and answering."""
        for master in self._masters:
            if not master.check(self._options.mux(master.control), timeout=timeout):
                raise PathBroken(f"ssh connection to {master.label} ended")

    def close(self) -> None:
        """Stop the masters, last first, and remove the control directory."""
        for master in reversed(self._masters):
            master.close()
        shutil.rmtree(self._workdir, ignore_errors=True)


def open_path(options: OpenSSHOptions, login: str, node: str, port: int, hop: str,
              cancel: threading.Event | None = None) -> OpenSSHPath:
    """Start the masters for ``hop`` (``ssh`` or ``direct``) and return the path.

    Raises SSHError (with OpenSSH's own reason) if a master cannot connect.
    """
    workdir = tempfile.mkdtemp(prefix="ffhpc-ssh-")  # 0700: control sockets are private
    masters: list[Master] = []
    try:
        login_ctl = os.path.join(workdir, "login")
        masters.append(_start(options, login_ctl, host_spec(login, what="login host").ssh_args(),
                              login, cancel))
        if hop == "direct":
            return OpenSSHPath(masters, options, (node, port), f"ssh {login} (OpenSSH), direct "
                               f"to {node}:{port}", workdir)
        proxy = shlex.join([*options.mux(login_ctl), "-W", "%h:%p", "mux"])
        node_ctl = os.path.join(workdir, "node")
        try:
            masters.append(_start(options, node_ctl, ["-o", f"ProxyCommand={proxy}", node], node,
                                  cancel))
        except SSHError as exc:
            why = masters[0].last_open_failure()
            if why:  # the login node could not even reach the node's sshd
                raise NodeSSHError(f"{login} cannot reach {node} port 22: {why}") from exc
            raise NodeSSHError(exc.message, hint=exc.hint) from exc
        return OpenSSHPath(masters, options, ("localhost", port), f"ssh {login} -> ssh {node} "
                           f"(OpenSSH), to the node's localhost:{port}", workdir)
    except BaseException:
        for master in reversed(masters):
            master.close()
        shutil.rmtree(workdir, ignore_errors=True)
        raise


def _start(options: OpenSSHOptions, control: str, args: list[str], label: str,
           cancel: threading.Event | None) -> Master:
    argv = [*options.base(), "-v", "-N", "-S", control, *args]
    master = Master(argv, control, label)
    master.wait_ready(options.mux(control), cancel=cancel)
    return master


def untouched(sock: socket.socket) -> bool:
    """True if nobody consumed or wrote a byte of ``sock`` since it was accepted.

    Linux: everything the client sent is still queued (SIOCINQ equals
    tcpi_bytes_received) and nothing was sent to it (tcpi_bytes_acked and
    SIOCOUTQ are 0). Elsewhere: False (never retry what may have been used).
    """
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
        acked, received = struct.unpack_from("=QQ", info, 120)
        queued_in = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4))[0]
        queued_out = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
    except (OSError, AttributeError, struct.error):
        return False
    return acked == 0 and queued_out == 0 and queued_in == received


def _at_eof(sock: socket.socket) -> bool:
    """True if the local client has closed its side (a browser preconnect, say)."""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except OSError:
        return False


def _has_terminal() -> bool:
    try:
        with open("/dev/tty", "rb"):
            return True
    except OSError:
        return False


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass
