"""What the user's own ``ssh`` makes of a destination: ``ssh -G`` and ``ssh -O check``.

``ssh -G`` prints the configuration ssh would use (every ``Host``/``Match`` block,
``Include``, ``Match exec``, ``CanonicalizeHostname`` and token expansion applied by
ssh itself), one ``keyword value`` per line. :func:`parse_g` reads that (pure);
:func:`spec_from_g` turns it into the :class:`~fireflyhpc.ssh.config.HostSpec` the
rest of fireflyhpc uses for messages and checks; :func:`node_options` says what a
compute node takes over from the login host.
"""

from __future__ import annotations

import getpass
import os
import subprocess
from typing import Mapping, Sequence

from fireflyhpc.errors import ConfigError, SSHError
from fireflyhpc.hostspec import host_spec
from fireflyhpc.ssh.config import GLOBAL_KNOWN_HOSTS, HostSpec
from fireflyhpc.ssh.master import OpenSSHOptions, check_control

Options = Mapping[str, Sequence[str]]
# OpenSSH's defaults (as ``ssh -G`` prints them when the config sets nothing).
_DEFAULT_IDENTITY_PREFIX = "~/.ssh/id_"
_DEFAULT_KNOWN_HOSTS = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")
_MAX_JUMP_DEPTH = 16


def destination_args(target: str) -> list[str]:
    """``ssh`` arguments for ``[ssh://][user@]host[:port]`` (pure): ``[-l U] [-p P] -- HOST``.

    Raises ConfigError for anything :func:`fireflyhpc.hostspec.host_spec` refuses.
    """
    given = host_spec(target, what="SSH destination")
    args = ["-l", given.user] if given.user else []
    if given.port is not None:
        args += ["-p", str(given.port)]
    return [*args, "--", given.host]


def parse_g(text: str) -> dict[str, list[str]]:
    """``ssh -G`` output as keyword (lower case) -> values, repeated keywords kept (pure)."""
    options: dict[str, list[str]] = {}
    for line in text.splitlines():
        keyword, _, value = line.strip().partition(" ")
        if keyword:
            options.setdefault(keyword.lower(), []).append(value.strip())
    return options


def ssh_g(options: OpenSSHOptions, target: str, extra: Sequence[str] = ()) -> dict[str, list[str]]:
    """What ``ssh -G`` says about ``target`` under the user's config (and ``extra`` -o's).

    Raises ConfigError when ssh rejects the config or the destination.
    """
    argv = [*options.client(), "-G", *extra, *destination_args(target)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SSHError(f"cannot run {options.ssh}: {exc}") from exc
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines()
                 if line.strip() and "Pseudo-terminal" not in line]
        raise ConfigError(f"ssh rejects the configuration for {target!r}: "
                          f"{' | '.join(lines[-3:]) or f'exit {done.returncode}'}")
    return parse_g(done.stdout)


def _first(options: Options, key: str, default: str = "") -> str:
    values = options.get(key)
    return values[0] if values else default


def _files(options: Options, key: str) -> tuple[str, ...]:
    return tuple(os.path.expanduser(path) for value in options.get(key, ())
                 for path in value.split() if path.lower() != "none")


def spec_from_g(alias: str, options: Options, hops: tuple[HostSpec, ...] = ()) -> HostSpec:
    """The HostSpec of ``alias`` as ``ssh -G`` resolved it (pure)."""
    strict = {"true": "yes", "false": "no"}.get(_first(options, "stricthostkeychecking", "ask"),
                                                _first(options, "stricthostkeychecking", "ask"))
    timeout = _first(options, "connecttimeout", "none")
    return HostSpec(
        alias=alias,
        hostname=_first(options, "hostname", alias),
        port=int(_first(options, "port", "22")),
        user=_first(options, "user") or getpass.getuser(),
        identity_files=_files(options, "identityfile"),
        identities_only=_first(options, "identitiesonly") == "yes",
        known_hosts_files=_files(options, "userknownhostsfile"),
        global_known_hosts_files=_files(options, "globalknownhostsfile") or GLOBAL_KNOWN_HOSTS,
        strict_host_key_checking=strict,
        hash_known_hosts=_first(options, "hashknownhosts") == "yes",
        host_key_alias=_first(options, "hostkeyalias") or None,
        connect_timeout=float(timeout) if timeout.isdigit() else None,
        batch_mode=_first(options, "batchmode") == "yes",
        proxy_command=_first(options, "proxycommand") or None,
        proxy_jump=hops,
    )


def resolve_spec(options: OpenSSHOptions, target: str, extra: Sequence[str] = ()
                 ) -> tuple[HostSpec, dict[str, list[str]]]:
    """``target``'s HostSpec (with its ProxyJump hops, each resolved by ssh too) and
    the raw ``ssh -G`` options. Raises ConfigError."""
    found = ssh_g(options, target, extra)
    hops: list[HostSpec] = []
    jump = _first(found, "proxyjump")
    for index, hop in enumerate(part for part in jump.split(",") if part and jump != "none"):
        if index >= _MAX_JUMP_DEPTH:
            raise ConfigError(f"SSH config: ProxyJump of {target!r} is too long")
        hops.append(spec_from_g(hop, ssh_g(options, hop)))
    return spec_from_g(host_spec(target, what="SSH destination").host, found, tuple(hops)), found


def user_master(options: OpenSSHOptions, found: Options) -> str | None:
    """The control socket of the user's own live master for this host, if any:
    the config gives it a ControlPath and a master answers ``ssh -O check`` there."""
    path = _first(found, "controlpath", "none")
    if path.lower() == "none" or not os.path.exists(os.path.expanduser(path)):
        return None
    path = os.path.expanduser(path)
    return path if check_control(options.mux(path)) else None


def node_options(node: Options, login: Options) -> list[str]:
    """``-o`` options for a compute node from what its config leaves at OpenSSH's
    defaults but the login host's sets: the account, keys, certificates and
    known_hosts (pure). Cluster nodes are rarely in a laptop's ssh_config."""
    extra: list[str] = []
    local_user = getpass.getuser()
    if _first(node, "user") == local_user and _first(login, "user") != local_user:
        extra.append(f"User={_first(login, 'user')}")
    node_keys, login_keys = node.get("identityfile", []), login.get("identityfile", [])
    if all(k.startswith(_DEFAULT_IDENTITY_PREFIX) for k in node_keys) and \
            not all(k.startswith(_DEFAULT_IDENTITY_PREFIX) for k in login_keys):
        extra += [f"IdentityFile={key}" for key in login_keys]
        if _first(login, "identitiesonly") == "yes":
            extra.append("IdentitiesOnly=yes")
    if not node.get("certificatefile") and login.get("certificatefile"):
        extra += [f"CertificateFile={cert}" for cert in login["certificatefile"]]
    default_kh = " ".join(os.path.expanduser(p) for p in _DEFAULT_KNOWN_HOSTS)
    if _first(node, "userknownhostsfile") == default_kh and \
            _first(login, "userknownhostsfile", default_kh) != default_kh:
        extra.append(f"UserKnownHostsFile={_first(login, 'userknownhostsfile')}")
    return [item for option in extra for item in ("-o", option)]


__all__ = ["destination_args", "node_options", "parse_g", "resolve_spec", "spec_from_g",
           "ssh_g", "user_master"]
