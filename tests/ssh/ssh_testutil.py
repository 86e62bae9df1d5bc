"""Helpers shared by the SSH tests (a uniquely named module: every area has a conftest)."""

from __future__ import annotations

import os
import pty
import select
import socket
import subprocess
import threading
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_concurrently(conn, jobs: list[list[list[str]]]) -> tuple[list[str], list[BaseException]]:
    """Run each job (commands run one after the other) on ``conn`` in a thread of its
    own, all jobs at once; return the stdouts (in completion order) and the errors."""
    results: list[str] = []
    errors: list[BaseException] = []

    def work(commands: list[list[str]]) -> None:
        try:
            for argv in commands:
                results.append(conn.run(argv).stdout)
        except BaseException as exc:  # the caller asserts there are none
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return results, errors


def keygen(path: Path, *, kind: str = "ed25519", passphrase: str = "") -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", passphrase, "-C", path.name,
                    "-f", str(path)], check=True, stdin=subprocess.DEVNULL)
    return path


DUO_TITLE = "Duo two-factor login for ffuser"
DUO_INSTRUCTIONS = ("Enter a passcode or select one of the following options:\n\n"
                    " 1. Duo Push to XXX-XXX-1234\n")
DUO_PROMPT = "Passcode or option (1-1): "


def start_duo_server(host_key: Path, password: str) -> tuple[int, threading.Thread]:
    """A one-connection in-process SSH server (paramiko) asking a Duo-style second factor
    after a password, over keyboard-interactive: OpenSSH with PAM cannot word prompts
    freely without extra PAM modules, paramiko's ServerInterface can. Returns its port
    and the serving thread (ends when the client disconnects, or after 60 s)."""
    import paramiko

    class Duo(paramiko.ServerInterface):
        def get_allowed_auths(self, username: str) -> str:
            return "keyboard-interactive"

        def check_auth_interactive(self, username: str, submethods: str):
            query = paramiko.InteractiveQuery("", "")
            query.add_prompt("Password: ", False)
            return query

        def check_auth_interactive_response(self, responses):
            if list(responses) == [password]:
                query = paramiko.InteractiveQuery(DUO_TITLE, DUO_INSTRUCTIONS)
                query.add_prompt(DUO_PROMPT, True)
                self.second = True
                return query
            if getattr(self, "second", False) and list(responses) == ["1"]:
                return paramiko.AUTH_SUCCESSFUL
            return paramiko.AUTH_FAILED

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(60)

    def serve() -> None:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        finally:
            listener.close()
        transport = paramiko.Transport(client)
        try:
            transport.add_server_key(paramiko.PKey.from_path(host_key))
            transport.start_server(server=Duo())
            transport.join(60)
        finally:
            transport.close()

    thread = threading.Thread(target=serve, name="duo-server", daemon=True)
    thread.start()
    return listener.getsockname()[1], thread


def converse(argv: list[str], replies: list[tuple[bytes, bytes]],
             limit: float = 60) -> tuple[int, bytes]:
    """Run ``argv`` with a new pty as its controlling terminal; answer the prompts in
    ``replies`` in order; return (exit status, everything it wrote to the terminal)."""
    pid, fd = pty.fork()
    if pid == 0:  # child: the pty is now its controlling terminal
        os.execvp(argv[0], argv)
    seen = b""
    pending = list(replies)
    searched = 0
    deadline = time.monotonic() + limit
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                seen += chunk
                while pending and pending[0][0] in seen[searched:]:
                    prompt, answer = pending.pop(0)
                    searched = seen.index(prompt, searched) + len(prompt)
                    os.write(fd, answer + b"\n")
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status), seen
        for _ in range(100):  # the terminal closed: the child is exiting
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status), seen
            time.sleep(0.1)
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        return -1, seen
    finally:
        os.close(fd)


def stop_process(process: subprocess.Popen, grace: float = 10) -> None:  # type: ignore[type-arg]
    """SIGTERM ``process``, wait up to ``grace`` s, then SIGKILL it; reaped either way."""
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
