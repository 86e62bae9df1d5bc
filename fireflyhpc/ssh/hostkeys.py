"""Host key verification against OpenSSH known_hosts files.

The policy is OpenSSH's ``StrictHostKeyChecking`` without questions: a known,
matching key passes; an unknown key is refused (with its type and SHA256
fingerprint, and the ``--accept-new-host-key`` flag named) unless accepting new
keys was asked for, in which case it is appended to the user's first known_hosts
file; a changed key is always refused, naming the file and line that holds the
old one. Hashed names (``|1|salt|hash``), ``[host]:port`` names, patterns with
``*``/``?``/``!`` and ``@revoked`` lines are understood. ``@cert-authority`` lines are
read (:func:`known_keys` reports them) but never match a key here: paramiko cannot
verify host certificates; the OpenSSH backend can. With ``HostKeyAlias`` the alias
alone is looked up, whatever the port, as OpenSSH does.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import paramiko

from fireflyhpc.errors import SSHError
from fireflyhpc.ssh.config import HostSpec
from fireflyhpc.ssh.sshmsg import ACCEPT_FLAG

log = logging.getLogger(__name__)
# Host key algorithms paramiko can negotiate, by the key type known_hosts stores.
_ALGORITHMS_BY_KEY_TYPE = {
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"),
}


@dataclass(frozen=True)
class KnownKey:
    """One key line of a known_hosts file that names a given host."""

    path: str
    line: int
    key_type: str
    key_base64: str
    revoked: bool = False
    cert_authority: bool = False  # an @cert-authority line: a CA that signs host keys


def fingerprint(key: paramiko.PKey) -> str:
    """The key's OpenSSH-style ``SHA256:...`` fingerprint."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _pattern_matches(pattern: str, name: str) -> bool:
    """OpenSSH host patterns: ``*`` and ``?`` are wildcards, everything else literal."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, name, flags=re.IGNORECASE) is not None


def _name_matches(pattern_field: str, name: str) -> bool:
    """Does a known_hosts host field (hashed, or comma-separated patterns) match ``name``?"""
    if pattern_field.startswith("|1|"):
        try:
            _, _, salt_b64, hash_b64 = pattern_field.split("|", 3)
            salt = base64.b64decode(salt_b64)
            expected = base64.b64decode(hash_b64)
        except (ValueError, binascii.Error):
            return False
        actual = hmac.new(salt, name.encode(), hashlib.sha1).digest()
        return hmac.compare_digest(actual, expected)
    matched = False
    for pattern in pattern_field.split(","):
        if pattern.startswith("!"):
            if _pattern_matches(pattern[1:], name):
                return False
        elif _pattern_matches(pattern, name):
            matched = True
    return matched


def known_keys(paths: tuple[str, ...], name: str) -> list[KnownKey]:
    """All key lines for host ``name`` in the known_hosts ``paths`` that exist (pure read)."""
    found: list[KnownKey] = []
    for path in paths:
        try:
            lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("cannot read known_hosts file %s: %s", path, exc.strerror)
            continue
        for number, line in enumerate(lines, start=1):
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            marker = None
            if fields[0].startswith("@"):
                marker, fields = fields[0], fields[1:]
            if len(fields) < 3:
                continue
            if _name_matches(fields[0], name):
                found.append(KnownKey(path, number, fields[1], fields[2], marker == "@revoked",
                                      marker == "@cert-authority"))
    return found


class HostKeyChecker:
    """Verifies server host keys for one program run.

    ``accept_new`` (the ``--accept-new-host-key`` flag) trusts and records keys of
    hosts that have none on file; the config's ``StrictHostKeyChecking
    accept-new``/``no`` does the same for the hosts it covers.
    """

    def __init__(self, *, accept_new: bool = False) -> None:
        self.accept_new = accept_new

    def preferred_key_types(self, spec: HostSpec, available: tuple[str, ...]) -> tuple[str, ...]:
        """Reorder ``available`` host key algorithms so the types already known come first.

        This is what OpenSSH does, so a host known by its RSA key is not reported
        as "unknown" because it also has an ed25519 key.
        """
        known = [k.key_type for k in self._lookup(spec) if not k.revoked]
        first: list[str] = []
        for key_type in known:
            for algorithm in _ALGORITHMS_BY_KEY_TYPE.get(key_type, (key_type,)):
                if algorithm in available and algorithm not in first:
                    first.append(algorithm)
        return tuple(first) + tuple(a for a in available if a not in first)

    def check(self, spec: HostSpec, key: paramiko.PKey) -> None:
        """Accept ``key`` for ``spec`` or raise SSHError (unknown, changed or revoked key)."""
        offered_type, offered_b64 = key.get_name(), key.get_base64()
        known = self._lookup(spec)
        for entry in known:
            if entry.revoked and entry.key_base64 == offered_b64:
                raise SSHError(f"host key for {spec.label} is REVOKED in {entry.path} line "
                               f"{entry.line}: {offered_type} {fingerprint(key)}; "
                               "refusing to connect")
        for entry in known:
            if not entry.revoked and entry.key_base64 == offered_b64:
                log.debug("host key of %s matches %s:%d", spec.label, entry.path, entry.line)
                return
        same_type = [k for k in known if k.key_type == offered_type and not k.revoked]
        if same_type:
            old = same_type[0]
            raise SSHError(
                f"HOST KEY CHANGED for {spec.label}: it offered {offered_type} {fingerprint(key)}, "
                f"which differs from the key in {old.path} line {old.line}; someone may be "
                "intercepting the connection (man-in-the-middle attack), or the host was "
                "reinstalled; refusing to connect",
                hint=f"if you are sure the new key is right, remove line {old.line} of {old.path}")
        self._unknown(spec, key, other_types=sorted({k.key_type for k in known}))

    def _unknown(self, spec: HostSpec, key: paramiko.PKey, other_types: list[str]) -> None:
        accept = self.accept_new or spec.strict_host_key_checking in ("accept-new", "no")
        if accept:
            where = self.remember(spec, key) if spec.known_hosts_files else "no file (none set)"
            log.warning("added %s host key %s of %s to %s", key.get_name(), fingerprint(key),
                        spec.label, where)
            return
        others = f" (known_hosts has a {', '.join(other_types)} key for it)" if other_types else ""
        raise SSHError(
            f"host key for {spec.label} is not known{others}: {key.get_name()} {fingerprint(key)}; "
            "refusing to connect",
            hint=f"check the fingerprint with your admins, then run again with {ACCEPT_FLAG} "
                 "to trust it")

    def remember(self, spec: HostSpec, key: paramiko.PKey) -> str:
        """Append ``key`` for ``spec`` to its first user known_hosts file; return that path.

        Creates the file (0600) and its directory (0700) if needed; hashes the name
        when the config says ``HashKnownHosts yes``. Raises SSHError if it cannot write.
        """
        path = Path(spec.known_hosts_files[0])
        name = spec.known_hosts_name
        if spec.hash_known_hosts:
            name = paramiko.HostKeys.hash_host(name)
        line = f"{name} {key.get_name()} {key.get_base64()}\n"
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as handle:
                if handle.tell() > 0 and not path.read_bytes().endswith(b"\n"):
                    handle.write("\n")
                handle.write(line)
        except OSError as exc:
            raise SSHError(f"cannot record the host key of {spec.label} in {path}: "
                           f"{exc.strerror or exc}") from exc
        return str(path)

    @staticmethod
    def _lookup(spec: HostSpec) -> list[KnownKey]:
        files = spec.known_hosts_files + spec.global_known_hosts_files
        return [k for k in known_keys(files, spec.known_hosts_name) if not k.cert_authority]
