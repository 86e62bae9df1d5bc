"""OpenSSH client configuration: read the user's ssh_config and resolve a host.

:func:`read_config` parses a file with :class:`paramiko.SSHConfig` (which knows
``Host``, ``Match`` and the ``%`` tokens of ``IdentityFile``), after inlining
``Include`` lines, which paramiko ignores. :func:`resolve_host` is pure given a
parsed config: it turns ``alias`` (or ``user@host:port``, any form that
:func:`fireflyhpc.hostspec.host_spec` accepts) into a frozen :class:`HostSpec`, with
its ``ProxyJump`` chain resolved into hops.

Known approximations of OpenSSH: an ``Include`` inside a ``Host``/``Match``
block is inlined at its place (the outer block is re-opened after it), so the
Host blocks of an included file apply whether or not the outer block matched;
``Match exec`` runs through paramiko, which runs the command with ``invoke`` (a
declared dependency for that reason alone); invoke mirrors the process's stdin to
the command, so it needs a real stdin (a terminal, a pipe or /dev/null).
"""

from __future__ import annotations

import getpass
import glob
import io
import os
import re
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from fireflyhpc.errors import ConfigError
from fireflyhpc.hostspec import host_spec
from fireflyhpc.validate import parse_port

if TYPE_CHECKING:  # parsing needs paramiko; HostSpec and the helpers do not
    import paramiko

DEFAULT_USER_CONFIG = "~/.ssh/config"
DEFAULT_KNOWN_HOSTS = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")
GLOBAL_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")
DEFAULT_IDENTITIES = ("~/.ssh/id_rsa", "~/.ssh/id_ecdsa", "~/.ssh/id_ed25519")
STRICT_MODES = {"yes": "yes", "no": "no", "off": "no", "ask": "ask", "accept-new": "accept-new"}
_MAX_INCLUDE_DEPTH = 16
_MAX_JUMP_DEPTH = 16


@dataclass(frozen=True)
class HostSpec:
    """Everything needed to open one SSH connection to one host.

    ``alias`` is the name the user gave; ``hostname`` what is dialled. ``proxy_jump``
    lists the hops to go through, in connection order, each itself a HostSpec
    without hops of its own (the chain is flattened).
    """

    alias: str
    hostname: str
    port: int = 22
    user: str = ""
    identity_files: tuple[str, ...] = ()
    identities_only: bool = False
    known_hosts_files: tuple[str, ...] = ()
    global_known_hosts_files: tuple[str, ...] = GLOBAL_KNOWN_HOSTS
    strict_host_key_checking: str = "ask"
    hash_known_hosts: bool = False
    host_key_alias: str | None = None
    connect_timeout: float | None = None
    server_alive_interval: int = 0
    server_alive_count_max: int = 3
    batch_mode: bool = False
    pubkey_authentication: bool = True
    kbd_interactive_authentication: bool = True
    password_authentication: bool = True
    number_of_password_prompts: int = 3
    preferred_authentications: tuple[str, ...] = ()
    proxy_command: str | None = None
    proxy_jump: tuple["HostSpec", ...] = field(default=())

    @property
    def known_hosts_name(self) -> str:
        """The name this host's keys are stored under in known_hosts: the HostKeyAlias
        alone if there is one (whatever the port, as OpenSSH does), else the host
        name, written ``[name]:port`` off port 22."""
        if self.host_key_alias:
            return self.host_key_alias
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"

    @property
    def label(self) -> str:
        """A short human name for messages: ``user@alias`` plus the real address if different."""
        where = self.alias if self.alias == self.hostname else f"{self.alias} ({self.hostname})"
        port = f" port {self.port}" if self.port != 22 else ""
        return f"{self.user}@{where}{port}"


def config_path(explicit: str | os.PathLike[str] | None) -> Path | None:
    """The ssh_config to read: ``explicit`` if given, else ``~/.ssh/config`` if it exists.

    Raises ConfigError if ``explicit`` names a file that does not exist.
    """
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError(f"SSH config file not found: {path}")
        return path
    default = Path(DEFAULT_USER_CONFIG).expanduser()
    return default if default.is_file() else None


def read_config(path: str | os.PathLike[str] | None) -> paramiko.SSHConfig:
    """Parse the ssh_config at ``path`` (None: an empty config), ``Include`` inlined.

    Raises ConfigError for an unreadable or unparsable file.
    """
    import paramiko

    if path is None:
        return paramiko.SSHConfig()
    path = Path(path).expanduser()
    try:
        text = _inline_includes(path, depth=0)
        return paramiko.SSHConfig.from_file(io.StringIO(text))
    except OSError as exc:
        raise ConfigError(f"cannot read SSH config {path}: {exc.strerror or exc}") from exc
    except (paramiko.ssh_exception.ConfigParseError, ValueError) as exc:
        raise ConfigError(f"cannot parse SSH config {path}: {exc}") from exc


def parse_config_text(text: str, *,
                      base_dir: str | os.PathLike[str] = "~/.ssh") -> paramiko.SSHConfig:
    """Parse ssh_config ``text`` (relative ``Include`` paths resolved against ``base_dir``)."""
    import paramiko

    return paramiko.SSHConfig.from_file(io.StringIO(_inline_text(text, Path(base_dir), 0)))


_KEYWORD = re.compile(r"^\s*(\w+)(?:\s*=\s*|\s+)(.*)$")


def _inline_includes(path: Path, depth: int) -> str:
    return _inline_text(path.read_text(encoding="utf-8"), Path("~/.ssh"), depth)


def _inline_text(text: str, base_dir: Path, depth: int) -> str:
    """Replace each ``Include`` line by the files it names (globs, ``~``, relative to ~/.ssh)."""
    if depth > _MAX_INCLUDE_DEPTH:
        raise ConfigError("SSH config: Include nested too deeply (a loop?)")
    out: list[str] = []
    header: str | None = None
    for line in text.splitlines():
        match = _KEYWORD.match(line)
        keyword = match.group(1).lower() if match else ""
        if keyword in ("host", "match"):
            header = line
        if keyword != "include" or match is None:
            out.append(line)
            continue
        for pattern in shlex.split(match.group(2)):
            pattern = os.path.expanduser(pattern)
            if not os.path.isabs(pattern):
                pattern = str(base_dir.expanduser() / pattern)
            for name in sorted(glob.glob(pattern)):
                out.append(_inline_includes(Path(name), depth + 1))
        if header is not None:
            out.append(header)  # the included file may have opened other blocks
    return "\n".join(out) + "\n"


def resolve_host(config: paramiko.SSHConfig, target: str, *,
                 inherit: HostSpec | None = None) -> HostSpec:
    """Resolve ``target`` (an alias or ``[user@]host[:port]``, see
    :func:`fireflyhpc.hostspec.host_spec`) into a HostSpec.

    User and port given in ``target`` win over the config, like on ssh's command
    line. ProxyJump hops are resolved through the same config. With ``inherit``
    (the login host, when reaching a compute node through it), what the config
    does not set for ``target`` (user, keys, known_hosts, host key policy,
    authentication options) is taken from ``inherit`` instead of OpenSSH's
    defaults: cluster nodes are rarely in a laptop's ssh_config, and the account
    and keys are the login node's. Raises ConfigError for bad values and ProxyJump loops.
    """
    spec = _resolve(config, target, seen=())
    if inherit is None:
        return spec
    given = host_spec(target, what="SSH destination")
    options = config.lookup(given.host)
    if given.user is not None:
        options["user"] = given.user
    taken = {name: getattr(inherit, name) for key, names in _INHERITED.items()
             if key not in options for name in names}
    return replace(spec, **taken)


# ssh_config keyword -> HostSpec fields taken from the login host when the keyword is unset.
_INHERITED = {
    "user": ("user",), "identityfile": ("identity_files",), "identitiesonly": ("identities_only",),
    "userknownhostsfile": ("known_hosts_files",),
    "globalknownhostsfile": ("global_known_hosts_files",),
    "stricthostkeychecking": ("strict_host_key_checking",),
    "hashknownhosts": ("hash_known_hosts",), "connecttimeout": ("connect_timeout",),
    "batchmode": ("batch_mode",), "preferredauthentications": ("preferred_authentications",),
    "pubkeyauthentication": ("pubkey_authentication",),
    "kbdinteractiveauthentication": ("kbd_interactive_authentication",),
    "passwordauthentication": ("password_authentication",),
}


def _resolve(config: paramiko.SSHConfig, target: str, seen: tuple[str, ...]) -> HostSpec:
    given = host_spec(target, what="SSH destination")
    host = given.host
    if host in seen or len(seen) > _MAX_JUMP_DEPTH:
        raise ConfigError(f"SSH config: ProxyJump loop through {' -> '.join(seen + (host,))}")
    options = config.lookup(host)
    if given.user is not None:
        options["user"] = given.user
    spec = _spec_from_options(host, options, given.port)
    jumps = _resolve_jumps(config, options.get("proxyjump"), seen + (host,))
    return replace(spec, proxy_jump=jumps)


def _resolve_jumps(config: paramiko.SSHConfig, value: str | None,
                   seen: tuple[str, ...]) -> tuple[HostSpec, ...]:
    """Flatten a ProxyJump value into hops: the first hop keeps its own jumps."""
    if not value or value.strip().lower() == "none":
        return ()
    hops: list[HostSpec] = []
    for index, text in enumerate(part.strip() for part in value.split(",")):
        if not text:
            raise ConfigError(f"SSH config: empty hop in ProxyJump {value!r}")
        hop = _resolve(config, text, seen)
        if index == 0:
            hops.extend(hop.proxy_jump)
        hops.append(replace(hop, proxy_jump=()))
    return tuple(hops)


def _spec_from_options(alias: str, options: paramiko.SSHConfigDict, port: int | None) -> HostSpec:
    user = options.get("user") or getpass.getuser()
    hostname = options.get("hostname", alias)
    if port is None:
        port = parse_port(options.get("port", 22), what=f"SSH config: Port for {alias}")
    identities = options.get("identityfile") or [os.path.expanduser(p) for p in DEFAULT_IDENTITIES]
    strict = options.get("stricthostkeychecking", "ask").lower()
    if strict not in STRICT_MODES:
        raise ConfigError(f"SSH config: bad StrictHostKeyChecking {strict!r} for {alias}")
    tokens = {"%d": os.path.expanduser("~"), "%u": getpass.getuser(), "%h": hostname,
              "%r": user, "%p": str(port), "%n": alias}
    return HostSpec(
        alias=alias,
        hostname=hostname,
        port=port,
        user=user,
        identity_files=tuple(identities),
        identities_only=_yes(options, "identitiesonly", False),
        known_hosts_files=_paths(options.get("userknownhostsfile"), DEFAULT_KNOWN_HOSTS, tokens),
        global_known_hosts_files=_paths(options.get("globalknownhostsfile"), GLOBAL_KNOWN_HOSTS,
                                        tokens),
        strict_host_key_checking=STRICT_MODES[strict],
        hash_known_hosts=_yes(options, "hashknownhosts", False),
        host_key_alias=options.get("hostkeyalias"),
        connect_timeout=_number(options, "connecttimeout", alias),
        server_alive_interval=int(_number(options, "serveraliveinterval", alias) or 0),
        server_alive_count_max=int(_number(options, "serveralivecountmax", alias) or 3),
        batch_mode=_yes(options, "batchmode", False),
        pubkey_authentication=_yes(options, "pubkeyauthentication", True),
        kbd_interactive_authentication=_yes(options, "kbdinteractiveauthentication",
                                            _yes(options, "challengeresponseauthentication", True)),
        password_authentication=_yes(options, "passwordauthentication", True),
        number_of_password_prompts=int(_number(options, "numberofpasswordprompts", alias) or 3),
        preferred_authentications=tuple(
            m.strip() for m in options.get("preferredauthentications", "").split(",") if m.strip()),
        proxy_command=options.get("proxycommand") or None,
    )


def _yes(options: paramiko.SSHConfigDict, key: str, default: bool) -> bool:
    value = options.get(key)
    if value is None:
        return default
    return value.strip().lower() in ("yes", "true", "on")


def _number(options: paramiko.SSHConfigDict, key: str, alias: str) -> float | None:
    value = options.get(key)
    if value is None or value.strip().lower() == "none":
        return None
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"SSH config: bad {key} value {value!r} for {alias}") from None
    if number < 0:
        raise ConfigError(f"SSH config: bad {key} value {value!r} for {alias}")
    return number


def _paths(value: str | None, default: tuple[str, ...], tokens: dict[str, str]) -> tuple[str, ...]:
    """Expand a whitespace-separated list of files (``none``: no files)."""
    if value is None:
        return tuple(os.path.expanduser(p) for p in default)
    if value.strip().lower() == "none":
        return ()
    paths = []
    for item in shlex.split(value):
        item = item.replace("%%", "\0")
        for token, replacement in tokens.items():
            item = item.replace(token, replacement)
        paths.append(os.path.expanduser(item.replace("\0", "%")))
    return tuple(paths)
