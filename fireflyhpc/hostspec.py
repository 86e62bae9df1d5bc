"""Where a host is: the one host/node name check (:func:`host_name`) and the one
parser of a login host as users write it (:func:`host_spec`: ``host``,
``user@host``, ``host:port``, ``user@host:port``, ``[::1]:22`` or an ssh_config
alias) into a :class:`HostTarget`.

Value rules like those of :mod:`fireflyhpc.validate`, on which this builds: pure,
raising ValueError (or, from :func:`host_spec`, a one-line ConfigError). The SSH
layer resolves a HostTarget against ssh_config (:mod:`fireflyhpc.ssh.config`).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from fireflyhpc.validate import checked, port, require_text

# A host or compute node name, an IPv4 address or an ssh_config alias: what may stand
# unquoted in a remote shell and never reads as an option. The two character sets are
# also what the generated shell functions check (fireflyhpc.aliases).
HOST_NAME_FIRST = "A-Za-z0-9_"
HOST_NAME_CHARS = "A-Za-z0-9_.-"
_HOST_NAME = re.compile(rf"[{HOST_NAME_FIRST}][{HOST_NAME_CHARS}]{{0,252}}")
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@+-]{0,127}")


def host_name(value: Any) -> str:
    """A host or compute node name, an IPv4 address or an ssh_config alias: letters,
    digits and ``_ . -``, not starting with ``-`` or ``.``, no ``..``, at most 253
    characters. Safe unquoted in a remote shell and on an ssh command line."""
    text = require_text(value, "a host name")
    problem = _host_name_problem(text)
    if problem:
        raise ValueError(f"expected a host name: {problem}")
    return text


def _host_name_problem(text: str) -> str | None:
    """What is wrong with ``text`` as a host name, or None."""
    if not text:
        return "the name is empty"
    bad = sorted({ch for ch in text if not (ch.isascii() and (ch.isalnum() or ch in "_.-"))})
    if bad:
        return "these characters are not allowed: " + " ".join(repr(ch) for ch in bad)
    if not _HOST_NAME.fullmatch(text) or ".." in text:
        return "letters, digits and _ . - only, not starting with - or ., at most 253"
    return None


HOST_SPEC_EXPECTED = "[user@]host[:port] or an ssh_config alias"


@dataclass(frozen=True)
class HostTarget:
    """A login host as the user wrote it, split: ``host`` (a name, an ssh_config alias
    or an IP address, IPv6 without brackets), and the ``user`` and ``port`` given with
    it (None when not given: ssh_config or the defaults decide)."""

    host: str
    user: str | None = None
    port: int | None = None

    @property
    def destination(self) -> str:
        """``user@host`` or ``host``: the destination argument of the ssh command."""
        return self.host if self.user is None else f"{self.user}@{self.host}"

    def ssh_args(self) -> list[str]:
        """The ssh command line's words for this target: ``[-p PORT] DESTINATION``."""
        return (["-p", str(self.port)] if self.port is not None else []) + [self.destination]

    def __str__(self) -> str:
        """The target written back as ``[user@]host[:port]`` (``[IPv6]:port``)."""
        user = "" if self.user is None else f"{self.user}@"
        if self.port is None:
            return user + self.host
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{user}{host}:{self.port}"


def _ipv6(text: str) -> str:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        raise ValueError(f"expected {HOST_SPEC_EXPECTED}; {text!r} is not an IPv6 "
                         "address") from None
    return text


def _host_target(value: Any) -> HostTarget:
    """:func:`host_spec`'s parser, raising ValueError (a validator)."""
    text = require_text(value, HOST_SPEC_EXPECTED)
    rest = text.removeprefix("ssh://")
    user, at, hostport = rest.rpartition("@")
    if at and not _USER.fullmatch(user):
        raise ValueError(f"expected {HOST_SPEC_EXPECTED}; {user!r} is not a user name")
    port_text: str | None = None
    if hostport.startswith("["):  # [IPv6] or [IPv6]:port
        inner, closed, tail = hostport[1:].partition("]")
        if not closed or (tail and not tail.startswith(":")):
            raise ValueError(f"expected {HOST_SPEC_EXPECTED}; an IPv6 address goes in "
                             "brackets: [::1]:22")
        host = _ipv6(inner)
        port_text = tail[1:] if tail else None
    elif hostport.count(":") > 1:  # a bare IPv6 address: no port can follow
        host = _ipv6(hostport)
    else:
        host, colon, after = hostport.partition(":")
        port_text = after if colon else None
        problem = _host_name_problem(host)
        if problem:
            raise ValueError(f"expected {HOST_SPEC_EXPECTED}; host name: {problem}")
    number = None
    if port_text is not None:
        try:
            number = port(port_text)
        except ValueError as exc:
            raise ValueError(f"expected {HOST_SPEC_EXPECTED}; the port: {exc}") from None
    return HostTarget(host=host, user=user if at else None, port=number)


def host_spec(text: Any, *, what: str = "host") -> HostTarget:
    """Parse a login host as users write it: ``host``, ``user@host``, ``host:port``,
    ``user@host:port``, an ssh_config alias, or an IPv6 address (``[::1]:22``, or bare
    ``::1`` without a port); ``ssh://`` in front is allowed, as ssh allows it.

    Raises a one-line ConfigError naming ``what`` for anything else (spaces, shell
    characters, a leading ``-``, an empty part, a bad port).
    """
    target: HostTarget = checked(_host_target, text, what)
    return target


def login_host(value: Any) -> str:
    """A login host (:func:`host_spec`'s forms), returned as written."""
    _host_target(value)
    return str(value)
