"""Authentication: ssh-agent, key files, keyboard-interactive, password.

Methods run in that order, as far as the server allows them, following partial
success (``AuthenticationMethods publickey,keyboard-interactive``). Anything that
needs a human goes through a :class:`~fireflyhpc.ssh.prompts.Prompter`, so a
terminal, a notebook or a test can answer. Decrypted keys and a password that worked are kept in memory by
the :class:`Authenticator`, so reconnecting asks again only for one-time codes.
"""

from __future__ import annotations

import base64
import logging
import os
from pathlib import Path
from typing import Iterator, Sequence

import paramiko

from fireflyhpc.errors import SSHError
from fireflyhpc.ssh.config import HostSpec
from fireflyhpc.ssh.prompts import CallbackPrompter, Prompter, TerminalPrompter

log = logging.getLogger(__name__)

__all__ = ["Authenticator", "CallbackPrompter", "Prompter", "TerminalPrompter",
           "shared_authenticator"]

PASSPHRASE_TRIES = 3


class Authenticator:
    """Authenticates transports; one per program run, shared by every connection."""

    def __init__(self, prompter: Prompter | None = None, *, use_agent: bool = True) -> None:
        self.prompter: Prompter = prompter if prompter is not None else TerminalPrompter()
        self.use_agent = use_agent
        self._keys: dict[str, paramiko.PKey] = {}
        self._unusable: set[str] = set()
        self._passwords: dict[tuple[str, str, int], str] = {}
        # True once the user was asked anything (a passphrase, a code, a password):
        # a second login elsewhere (another ssh client) would ask again.
        self.asked_user = False

    def authenticate(self, transport: paramiko.Transport, spec: HostSpec) -> None:
        """Authenticate ``transport`` as ``spec.user`` or raise SSHError naming what was tried."""
        try:
            transport.auth_none(spec.user)
            return
        except paramiko.BadAuthenticationType as exc:
            allowed = list(exc.allowed_types)
        except paramiko.SSHException as exc:
            raise SSHError(f"authentication with {spec.label} failed: {exc}") from exc
        tried: list[str] = []
        done: set[str] = set()
        steps = {"publickey": self._publickey, "keyboard-interactive": self._interactive,
                 "password": self._password}
        while not transport.is_authenticated():
            method = next((m for m in self._order(spec) if m in allowed and m not in done), None)
            if method is None:
                raise SSHError(f"authentication failed for {spec.label}: tried "
                               f"{'; '.join(tried) or 'nothing'}; the server accepts "
                               f"{', '.join(allowed) or 'nothing'}")
            done.add(method)
            try:
                remaining = steps[method](transport, spec, tried)
            except paramiko.BadAuthenticationType as exc:
                remaining = list(exc.allowed_types)
            except paramiko.AuthenticationException:
                remaining = None
            except paramiko.SSHException as exc:
                raise SSHError(f"authentication with {spec.label} failed: {exc}") from exc
            if remaining is not None and not transport.is_authenticated():
                log.debug("partial success with %s; next: %s", method, remaining)
                allowed = list(remaining)
        log.debug("authenticated to %s", spec.label)

    @staticmethod
    def _order(spec: HostSpec) -> list[str]:
        asks = not spec.batch_mode
        enabled = {"publickey": spec.pubkey_authentication,
                   "keyboard-interactive": spec.kbd_interactive_authentication and asks,
                   "password": spec.password_authentication and asks}
        order = [m for m in spec.preferred_authentications if m in enabled] or list(enabled)
        return [m for m in order if enabled[m]]

    # -- publickey -------------------------------------------------------------------
    def _publickey(self, transport: paramiko.Transport, spec: HostSpec,
                   tried: list[str]) -> list[str] | None:
        """Offer agent keys then key files; return the server's next methods on partial success."""
        agent = paramiko.Agent() if self.use_agent and os.environ.get("SSH_AUTH_SOCK") else None
        try:
            for label, key in self._candidate_keys(spec, agent):
                tried.append(f"publickey {label}")
                try:
                    remaining = transport.auth_publickey(spec.user, key)
                except paramiko.AuthenticationException:
                    continue
                return list(remaining)
            return None
        finally:
            if agent is not None:
                agent.close()

    def _candidate_keys(self, spec: HostSpec,
                        agent: paramiko.Agent | None) -> Iterator[tuple[str, paramiko.PKey]]:
        """Agent keys, then key files that need no passphrase, then encrypted ones (so a
        passphrase is asked only when no key without one was accepted)."""
        files = [p for p in spec.identity_files if Path(p).is_file()]
        wanted = {_public_blob(p) for p in files} - {None}
        offered: set[bytes] = set()
        for key in agent.get_keys() if agent is not None else ():
            if spec.identities_only and key.asbytes() not in wanted:
                continue
            offered.add(key.asbytes())
            yield f"agent key {key.get_name()} {key.comment or ''}".rstrip(), key
        encrypted = []
        for path in files:
            blob = _public_blob(path)
            if blob is not None and blob in offered:
                continue
            key = self._load_key(path, spec, ask=False)
            if key is None and path not in self._unusable:
                encrypted.append(path)
            elif key is not None and key.asbytes() not in offered:
                offered.add(key.asbytes())
                yield path, key
        for path in encrypted:
            key = self._load_key(path, spec, ask=True)
            if key is not None and key.asbytes() not in offered:
                offered.add(key.asbytes())
                yield path, key

    def _load_key(self, path: str, spec: HostSpec, *, ask: bool) -> paramiko.PKey | None:
        """Load a private key (asking for its passphrase if ``ask`` and it is encrypted);
        None if it needs one that was not given, or cannot be used (then in _unusable)."""
        if path in self._keys:
            return self._keys[path]
        try:
            key = paramiko.PKey.from_path(path)
        except TypeError:  # encrypted: cryptography wants a password
            if not ask:
                return None
            if spec.batch_mode:
                log.info("skipping encrypted key %s (BatchMode)", path)
                return None
            key = self._decrypt(path)
        except (OSError, ValueError, paramiko.SSHException) as exc:
            log.info("skipping identity file %s: %s", path, exc)
            self._unusable.add(path)
            return None
        if key is not None:
            self._keys[path] = key
        return key

    def _decrypt(self, path: str) -> paramiko.PKey | None:
        for _ in range(PASSPHRASE_TRIES):
            self.asked_user = True
            passphrase = self.prompter.secret(f"Enter passphrase for key '{path}': ")
            if not passphrase:
                return None  # like OpenSSH: an empty answer skips the key
            try:
                return paramiko.PKey.from_path(path, passphrase.encode())
            except (ValueError, TypeError, paramiko.SSHException):
                log.warning("wrong passphrase for %s", path)
        return None

    # -- keyboard-interactive and password ---------------------------------------------
    def _interactive(self, transport: paramiko.Transport, spec: HostSpec,
                     tried: list[str]) -> list[str]:
        """Answer the server's prompts through the prompter; a prompter error is re-raised
        here, not in paramiko's thread (which would log a traceback and kill the transport)."""
        tried.append("keyboard-interactive")
        failure: list[BaseException] = []

        def handler(title: str, instructions: str,
                    prompts: Sequence[tuple[str, bool]]) -> list[str]:
            if failure or (not prompts and not title and not instructions):
                return [""] * len(prompts)
            try:
                if prompts:
                    self.asked_user = True
                return list(self.prompter.interactive(title, instructions, list(prompts)))
            except BaseException as exc:  # KeyboardInterrupt too: hand it to the caller
                failure.append(exc)
                return [""] * len(prompts)

        try:
            remaining = list(transport.auth_interactive(spec.user, handler))
        except paramiko.AuthenticationException:
            if failure:
                raise failure[0] from None
            raise
        if failure:
            raise failure[0]
        return remaining

    def _password(self, transport: paramiko.Transport, spec: HostSpec,
                  tried: list[str]) -> list[str] | None:
        tried.append("password")
        slot = (spec.user, spec.hostname, spec.port)
        cached = self._passwords.pop(slot, None)
        for attempt in range(max(1, spec.number_of_password_prompts) + (cached is not None)):
            if attempt == 0 and cached is not None:
                password = cached
            else:
                self.asked_user = True
                password = self.prompter.secret(f"{spec.user}@{spec.hostname}'s password: ")
            try:
                remaining = transport.auth_password(spec.user, password, fallback=False)
            except paramiko.AuthenticationException:
                continue
            self._passwords[slot] = password
            return list(remaining)
        return None


def _public_blob(private_path: str) -> bytes | None:
    """The public key blob from ``<path>.pub``, or None if there is none readable."""
    try:
        fields = Path(private_path + ".pub").read_text(encoding="utf-8").split()
        return paramiko.PKey.from_type_string(fields[0], base64.b64decode(fields[1])).asbytes()
    except (OSError, IndexError, ValueError, paramiko.SSHException):  # binascii.Error too
        return None


_shared: Authenticator | None = None


def shared_authenticator() -> Authenticator:
    """The program's own Authenticator (terminal prompts), created on first use.

    Connections opened without an explicit prompter or authenticator share it, so a
    reconnect, or a second command of the same run, does not ask for a key's
    passphrase again.
    """
    global _shared
    if _shared is None:
        _shared = Authenticator()
    return _shared
