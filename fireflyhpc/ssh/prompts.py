"""Who answers when SSH needs a human: a passphrase, a password, a one-time code.

A :class:`Prompter` is given to :func:`fireflyhpc.ssh.open_connection`: the OpenSSH
backend relays ssh's questions to it (:mod:`fireflyhpc.ssh.askpass`), the paramiko
backend asks it directly (:mod:`fireflyhpc.ssh.auth`). No SSH library is needed here.
"""

from __future__ import annotations

import getpass
import io
import os
import sys
from typing import Callable, Protocol, Sequence, TextIO

from fireflyhpc import terminal
from fireflyhpc.errors import SSHError


class Prompter(Protocol):
    """Asks the user for secrets and keyboard-interactive answers.

    Implementations raise SSHError when they cannot ask (no terminal).
    """

    def secret(self, prompt: str) -> str:
        """Ask for a passphrase or password (not echoed); ``prompt`` is shown as is."""
        ...

    def interactive(self, title: str, instructions: str,
                    prompts: Sequence[tuple[str, bool]]) -> list[str]:
        """Show ``title``/``instructions``; ask each (prompt, echo) as the server words it."""
        ...


class TerminalPrompter:
    """Asks on the controlling terminal (or a notebook's patched ``getpass``)."""

    def _frontend_getpass(self) -> bool:
        return getattr(getpass.getpass, "__module__", "getpass") != "getpass"

    def _tty(self) -> TextIO:
        try:
            fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
        except OSError:
            raise SSHError("the server asks for input (a passphrase, password or code) but there "
                           "is no terminal to ask on",
                           hint="use ssh-agent or an unencrypted key for non-interactive runs"
                           ) from None
        return io.TextIOWrapper(io.FileIO(fd, "w+"), encoding="utf-8")  # closed by the caller

    def secret(self, prompt: str) -> str:
        terminal.before_prompt()
        if self._frontend_getpass():
            return getpass.getpass(prompt)
        with self._tty() as tty:
            return getpass.getpass(prompt, stream=tty)

    def interactive(self, title: str, instructions: str,
                    prompts: Sequence[tuple[str, bool]]) -> list[str]:
        terminal.before_prompt()
        if self._frontend_getpass():
            for text in (title, instructions):
                if text:
                    print(text, file=sys.stderr)
            return [input(p) if echo else getpass.getpass(p) for p, echo in prompts]
        answers = []
        with self._tty() as tty:
            for text in (title, instructions):
                if text:
                    tty.write(text.rstrip("\n") + "\n")
            for prompt, echo in prompts:
                if echo:
                    tty.write(prompt)
                    tty.flush()
                    answers.append(tty.readline().rstrip("\n"))
                else:
                    answers.append(getpass.getpass(prompt, stream=tty))
        return answers


class CallbackPrompter:
    """A Prompter made of two functions (a notebook widget, a test's scripted answers)."""

    def __init__(self, secret: Callable[[str], str] | None = None,
                 interactive: Callable[[str, str, Sequence[tuple[str, bool]]], list[str]]
                 | None = None) -> None:
        self._secret = secret
        self._interactive = interactive

    def secret(self, prompt: str) -> str:
        if self._secret is None:
            raise SSHError(f"no answer available for the prompt {prompt.strip()!r}")
        return self._secret(prompt)

    def interactive(self, title: str, instructions: str,
                    prompts: Sequence[tuple[str, bool]]) -> list[str]:
        if self._interactive is None:
            asked = [p for p, _ in prompts]
            raise SSHError(f"no answers available for the server's prompts {asked}")
        return self._interactive(title, instructions, prompts)


__all__ = ["CallbackPrompter", "Prompter", "TerminalPrompter"]
