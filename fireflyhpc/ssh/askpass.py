"""Relaying ssh's questions to a Python :class:`~fireflyhpc.ssh.auth.Prompter`.

Without a terminal (Jupyter, a script, a test), ``ssh`` can still ask: with
``SSH_ASKPASS_REQUIRE=force`` (OpenSSH 8.4 and newer) it runs the program named by
``SSH_ASKPASS`` with the prompt as its argument and reads the answer from its stdout.
:class:`AskpassRelay` writes such a program into a private (0700) directory; the
program hands the prompt to this process over a Unix socket in that directory and
prints the answer it gets back. Answers never touch a command line or a file;
only the user (and root) can connect to the socket.

What ssh asks is classified by its wording: key passphrases, PINs and the password
method go to :meth:`Prompter.secret`; keyboard-interactive prompts and anything else
(a one-time code, a Duo menu) to
:meth:`Prompter.interactive`, with the text the server sent before it (ssh prints
that on stderr) as instructions. ``SSH_ASKPASS_PROMPT=none`` (touch your security
key) is a notice: it is logged at WARNING level and needs no answer.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import socket
import sys
import threading
from typing import Callable

from fireflyhpc.errors import SSHError
from fireflyhpc.ssh.prompts import Prompter

log = logging.getLogger(__name__)

HELPER_NAME = "askpass"
SOCKET_NAME = "askpass.sock"
SOCKET_ENV = "FIREFLYHPC_ASKPASS_SOCKET"
# ssh (8.4+) words keyboard-interactive prompts "(user@host) PROMPT"; a key's passphrase
# "Enter passphrase for key '...': ", a security key's PIN "Enter PIN for ...", the
# password method "user@host's password: ".
_KEYBOARD_INTERACTIVE = re.compile(r"^\([^()\s]+@[^()\s]+\) ")
_SECRET = re.compile(r"passphrase|'s password: |\bPIN\b", re.IGNORECASE)
# Started by ssh with the prompt as argv[1]; isolated, no site imports: fast and
# independent of whatever the user's environment puts on sys.path.
_HELPER_CODE = r"""
import json, os, socket, sys
prompt = sys.argv[1] if len(sys.argv) > 1 else ""
kind = os.environ.get("SSH_ASKPASS_PROMPT", "")
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    sock.connect(os.environ["FIREFLYHPC_ASKPASS_SOCKET"])
    sock.sendall(json.dumps({"prompt": prompt, "kind": kind}).encode() + b"\n")
    if kind == "none":
        sys.exit(0)
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    reply = json.loads(data or b"{}")
except (OSError, KeyError, ValueError):
    sys.exit(1)
if "answer" not in reply:
    sys.exit(1)
sys.stdout.write(reply["answer"] + "\n")
"""


def helper_script(python: str = sys.executable) -> str:
    """The askpass program (a shell script starting Python on the helper code; pure)."""
    return "#!/bin/sh\nexec " + shlex.join([python, "-I", "-S", "-c", _HELPER_CODE]) + ' "$@"\n'


class AskpassRelay:
    """Answers ssh's askpass requests through ``prompter``, in directory ``workdir``
    (which must be private to the user: created 0700 by the caller).

    ``context`` returns text ssh printed before a prompt (instructions). Counts
    every question in :attr:`asked`; keeps the prompter's own error (no terminal,
    a cancelled dialog) in :attr:`failure`, so the caller can report it instead of
    ssh's "Permission denied".
    """

    def __init__(self, workdir: str, prompter: Prompter,
                 context: Callable[[], str] | None = None) -> None:
        self.prompter = prompter
        self.context = context or (lambda: "")
        self.asked = 0
        self.failure: BaseException | None = None
        self.helper = os.path.join(workdir, HELPER_NAME)
        self.socket_path = os.path.join(workdir, SOCKET_NAME)
        self._lock = threading.Lock()  # one question at a time
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(self.socket_path)
        os.chmod(self.socket_path, 0o600)
        self._server.listen(4)
        fd = os.open(self.helper, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o700)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(helper_script())
        self._thread = threading.Thread(target=self._serve, name="askpass", daemon=True)
        self._thread.start()

    def env(self) -> dict[str, str]:
        """Environment for ssh so that every question comes here."""
        return {"SSH_ASKPASS": self.helper, "SSH_ASKPASS_REQUIRE": "force",
                SOCKET_ENV: self.socket_path}

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:  # closed
                return
            threading.Thread(target=self._answer, args=(client,), name="askpass-answer",
                             daemon=True).start()

    def _answer(self, client: socket.socket) -> None:
        with client:
            try:
                request = json.loads(_read_line(client) or "{}")
                prompt, kind = str(request.get("prompt", "")), str(request.get("kind", ""))
            except (OSError, ValueError):
                return
            if kind == "none":
                log.warning("ssh: %s", prompt.strip())
                return
            with self._lock:
                reply = self._ask(prompt, kind)
            try:
                client.sendall(json.dumps(reply).encode() + b"\n")
            except OSError as exc:
                log.debug("askpass helper gone before its answer: %s", exc)

    def _ask(self, prompt: str, kind: str) -> dict[str, str]:
        self.asked += 1
        try:
            if kind != "confirm" and not _KEYBOARD_INTERACTIVE.match(prompt) \
                    and _SECRET.search(prompt):
                return {"answer": self.prompter.secret(prompt)}
            answers = self.prompter.interactive("", self.context(), [(prompt, False)])
            return {"answer": answers[0] if answers else ""}
        except BaseException as exc:  # KeyboardInterrupt too: ssh gets no answer, the caller the error
            self.failure = exc
            log.debug("prompter refused %r: %s", prompt, exc)
            return {}

    def raise_failure(self) -> None:
        """Raise the prompter's error, if it failed to answer (as SSHError or as it was)."""
        failure = self.failure
        if failure is None:
            return
        if isinstance(failure, (SSHError, KeyboardInterrupt)):
            raise failure
        raise SSHError(f"could not answer ssh's question: {failure}") from failure

    def close(self) -> None:
        """Stop answering and remove the helper and the socket; idempotent."""
        try:
            self._server.close()
        except OSError:
            pass
        for path in (self.socket_path, self.helper):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


def _read_line(sock: socket.socket, limit: int = 65536) -> str:
    data = b""
    while not data.endswith(b"\n") and len(data) < limit:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.decode("utf-8", "replace")


__all__ = ["AskpassRelay", "helper_script"]
