"""The fireflyhpc config file (TOML) and its named cluster profiles.

The file lives at ``platformdirs.user_config_dir("fireflyhpc")/config.toml`` unless
``--config PATH`` or ``FIREFLYHPC_CONFIG`` names another one. It has a
``default_cluster`` and one ``[clusters.NAME]`` table per cluster.

Where a setting comes from, highest first: command-line flags, then the documented
``FIREFLYHPC_*`` environment variables (:data:`ENV_VARS`), then the cluster profile,
then the built-in defaults (:data:`DEFAULTS`). :func:`resolve` is the one place that
applies this order; it is pure and records the source of every value.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import platformdirs

from fireflyhpc import validate as v
from fireflyhpc.errors import ConfigError
from fireflyhpc.settings import validators as setting_validators

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

CONFIG_FILE_NAME = "config.toml"

# Every key a [clusters.NAME] table may hold, with the validator of its value
# (from the one table, fireflyhpc.settings.SETTINGS).
PROFILE_KEYS: dict[str, v.Validator] = setting_validators(
    "login", "scheduler", "partition", "account", "qos", "constraint", "time", "cpus", "mem",
    "gpus", "setup", "python", "hop", "linger", "port_range", "template", "payload", "launch",
    "job_name", "ssh")

# Settings that only exist on the command line (never in a profile).
FLAG_ONLY_KEYS: dict[str, v.Validator] = setting_validators("local_port")

# Built-in defaults: the lowest layer. None means "leave it to the cluster".
DEFAULTS: dict[str, Any] = {
    "login": None,
    "scheduler": "slurm",
    "partition": None,
    "account": None,
    "qos": None,
    "constraint": None,
    "time": "1:00:00",
    "cpus": 1,
    "mem": None,
    "gpus": None,
    "setup": [],
    "python": "python3",
    "hop": "auto",
    "linger": 600,  # seconds the node keeps the server after losing connect
    "port_range": None,  # any free port
    "template": "firefly",
    "payload": "auto",
    "launch": "auto",
    "job_name": "fireflyhpc",
    "ssh": "auto",
    "local_port": None,
}

# The documented environment variables and the setting each one sets.
ENV_VARS: dict[str, str] = {
    "FIREFLYHPC_PARTITION": "partition",
    "FIREFLYHPC_ACCOUNT": "account",
    "FIREFLYHPC_TIME": "time",
    "FIREFLYHPC_TEMPLATE": "template",
    "FIREFLYHPC_PAYLOAD": "payload",
    "FIREFLYHPC_SSH": "ssh",
}
# Chooses the cluster profile when --cluster is not given (before default_cluster).
ENV_CLUSTER = "FIREFLYHPC_CLUSTER"

@dataclass(frozen=True)
class ClusterProfile:
    """One validated ``[clusters.NAME]`` table; ``values`` holds only the keys given."""

    name: str
    values: Mapping[str, Any]
    source: str = "<built-in>"


@dataclass(frozen=True)
class Config:
    """A loaded, validated config file (possibly empty when there is no file)."""

    path: Path
    exists: bool
    default_cluster: str | None = None
    clusters: Mapping[str, ClusterProfile] = field(default_factory=dict)

    def profile(self, name: str) -> ClusterProfile:
        """The profile called ``name``; raises ConfigError naming the known ones."""
        try:
            return self.clusters[name]
        except KeyError:
            known = ", ".join(sorted(self.clusters)) or "none"
            where = str(self.path) if self.exists else f"{self.path} (no such file)"
            raise ConfigError(f"unknown cluster {name!r} in {where}; known clusters: {known}",
                              hint="add a [clusters.NAME] table, see `fireflyhpc config init`"
                              ) from None


@dataclass(frozen=True)
class ResolvedSettings:
    """Every setting connect needs, after flags > env > profile > defaults.

    ``sources`` maps each setting to where its value came from: ``flag``, the
    environment variable's name, ``profile <name>`` or ``default``.
    """

    cluster: str | None
    login: str | None
    scheduler: str
    partition: str | None
    account: str | None
    qos: str | None
    constraint: str | None
    time: str
    cpus: int
    mem: str | None
    gpus: int | None
    setup: tuple[str, ...]
    python: str
    hop: str
    linger: int
    port_range: tuple[int, int] | None
    template: str
    payload: str
    launch: str
    job_name: str
    ssh: str
    local_port: int | None
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    def require_login(self) -> str:
        """The login host; raises ConfigError when the profile does not name one."""
        if not self.login and self.cluster is None:
            raise ConfigError("no cluster chosen and no login host given",
                              hint="pass --cluster NAME, set FIREFLYHPC_CLUSTER, or set "
                                   "default_cluster in the config file")
        if not self.login:
            raise ConfigError(f"cluster {self.cluster}: no login host configured",
                              hint=f"set login = \"HOST\" in [clusters.{self.cluster}]")
        return self.login

    def as_dict(self) -> dict[str, Any]:
        """The settings as plain data (lists for tuples), without ``sources``."""
        out = {k: getattr(self, k) for k in ["cluster", *DEFAULTS]}
        out["setup"] = list(self.setup)
        out["port_range"] = None if self.port_range is None else list(self.port_range)
        return out


def default_config_path() -> Path:
    """Where the config file lives when neither --config nor FIREFLYHPC_CONFIG is set."""
    return Path(platformdirs.user_config_dir("fireflyhpc")) / CONFIG_FILE_NAME


def config_path(option: str | os.PathLike[str] | None) -> Path:
    """The config file in use: the --config / FIREFLYHPC_CONFIG value, else the default."""
    return Path(option).expanduser() if option else default_config_path()


def templates_dir(path: Path) -> Path:
    """The user's template folder that sits next to the config file ``path``."""
    return path.parent / "templates"


Locator = Callable[[Optional[str], Optional[str]], str]


def line_locator(text: str, source: str) -> Locator:
    """``where(table, key)`` -> ``"file:LINE"`` of ``key`` in ``[table]`` (best effort:
    ``"file"`` alone when the key is not written plainly as ``key = ...``)."""
    def where(table: str | None, key: str | None) -> str:
        current: str | None = None
        for number, line in enumerate(text.splitlines(), start=1):
            stripped = line.strip()
            header = re.fullmatch(r"\[\s*([^\[\]]+?)\s*\]\s*(#.*)?", stripped)
            if header:
                parts = re.findall(r"\"[^\"]*\"|'[^']*'|[^.]+", header.group(1))
                current = ".".join(part.strip().strip("\"'") for part in parts)
                full = key if table is None else table if key is None else f"{table}.{key}"
                if current == full:
                    return f"{source}:{number}"
                continue
            if key is not None and current == table and re.match(
                    rf"[\"']?{re.escape(key)}[\"']?\s*=", stripped):
                return f"{source}:{number}"
        return source
    return where


def _is_cluster_name(value: Any) -> bool:
    try:
        v.cluster_name(value)
    except ValueError:
        return False
    return True


def parse_profile(name: str, table: Any, source: str,
                  where: Locator | None = None) -> ClusterProfile:
    """Validate one ``[clusters.NAME]`` table; raises ConfigError naming file and key.

    ``where(table, key)`` names the place of a key (default: just ``source``).
    """
    at: Locator = where or (lambda _table, _key: source)
    section = f"clusters.{name}"
    if not _is_cluster_name(name):
        raise ConfigError(f"{at(section, None)}: [clusters.{name!r}]: expected a cluster name "
                          "of letters, digits and _ . -")
    if not isinstance(table, dict):
        raise ConfigError(f"{at(None, 'clusters')}: clusters.{name}: expected a table "
                          f"[clusters.{name}]")
    values: dict[str, Any] = {}
    for key, raw in table.items():
        if key not in PROFILE_KEYS:
            raise ConfigError(f"{at(section, key)}: [clusters.{name}] unknown key {key!r}; "
                              f"expected one of: {', '.join(PROFILE_KEYS)}")
        values[key] = v.checked(PROFILE_KEYS[key], raw, f"{at(section, key)}: [{section}] {key}")
    return ClusterProfile(name=name, values=values, source=source)


def parse_config(text: str, path: Path) -> Config:
    """Parse and validate config ``text`` read from ``path`` (pure).

    Raises ConfigError with ``file:line`` for malformed TOML, and naming the file
    (with the line where it can tell), the key and what was expected for unknown
    keys or bad values.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = re.search(r"\(at line (\d+), column \d+\)", message)
        line = f":{found.group(1)}" if found else ""
        reason = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", message)
        raise ConfigError(f"{path}{line}: invalid TOML: {reason}") from None
    source = str(path)
    at = line_locator(text, source)
    clusters: dict[str, ClusterProfile] = {}
    default = None
    for key, raw in data.items():
        if key == "default_cluster":
            if not _is_cluster_name(raw):
                raise ConfigError(f"{at(None, key)}: default_cluster: expected a cluster name")
            default = raw
        elif key == "clusters":
            if not isinstance(raw, dict):
                raise ConfigError(f"{at(None, key)}: clusters: expected tables [clusters.NAME]")
            for name, table in raw.items():
                clusters[name] = parse_profile(name, table, source, at)
        else:
            raise ConfigError(f"{at(None, key)}: unknown key {key!r}; expected default_cluster "
                              "or [clusters.NAME] tables")
    if default is not None and default not in clusters:
        raise ConfigError(f"{at(None, 'default_cluster')}: default_cluster = {default!r} has "
                          f"no [clusters.{default}]")
    return Config(path=path, exists=True, default_cluster=default, clusters=clusters)


def load_config(option: str | os.PathLike[str] | None) -> Config:
    """Read the config file named by ``option`` (or the default one).

    A missing default file is an empty config; a missing file that was named
    explicitly is a ConfigError, as is any unreadable or invalid file.
    """
    path = config_path(option)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if option:
            raise ConfigError(f"config file not found: {path}",
                              hint=f"create one with `fireflyhpc config init {path}`") from None
        return Config(path=path, exists=False)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    return parse_config(text, path)


def pick_profile(config: Config, flag: str | None,
                 env: Mapping[str, str]) -> ClusterProfile | None:
    """The profile named by --cluster, else FIREFLYHPC_CLUSTER, else default_cluster.

    Returns None when nothing names a cluster; raises ConfigError for an unknown name.
    """
    name = flag or env.get(ENV_CLUSTER) or config.default_cluster
    if not name:
        return None
    return config.profile(name)


def resolve(flags: Mapping[str, Any], env: Mapping[str, str],
            profile: ClusterProfile | None) -> ResolvedSettings:
    """Merge settings: flags > environment (:data:`ENV_VARS`) > profile > defaults.

    ``flags`` maps setting names to values, None meaning "not given"; flag and
    environment values are validated like profile values (ConfigError naming the
    flag or the variable). Pure: reads nothing but its arguments.
    """
    validators = {**PROFILE_KEYS, **FLAG_ONLY_KEYS}
    values = dict(DEFAULTS)
    sources = {key: "default" for key in DEFAULTS}
    if profile is not None:
        for key, value in profile.values.items():
            values[key], sources[key] = value, f"profile {profile.name}"
    for var, key in ENV_VARS.items():
        raw = env.get(var)
        if raw:
            values[key] = v.checked(validators[key], raw, var)
            sources[key] = var
    for key, value in flags.items():
        if key not in validators:
            raise ConfigError(f"unknown setting {key!r}")
        if value is not None:
            flag = "--" + key.replace("_", "-")
            values[key], sources[key] = v.checked(validators[key], value, flag), "flag"
    values["setup"] = tuple(values["setup"])
    if values["port_range"] is not None:
        values["port_range"] = tuple(values["port_range"])
    cluster = profile.name if profile is not None else None
    return ResolvedSettings(cluster=cluster, sources=sources, **values)


def load_settings(config_option: str | None, flags: Mapping[str, Any],
                  env: Mapping[str, str] | None = None,
                  cluster: str | None = None) -> ResolvedSettings:
    """Load the config, pick the profile and :func:`resolve` (the I/O wrapper)."""
    env = os.environ if env is None else env
    config = load_config(config_option)
    return resolve(flags, env, pick_profile(config, cluster, env))


def example_config_text() -> str:
    """The commented example config shipped as ``fireflyhpc.config``."""
    from fireflyhpc.resources import shipped_file

    return shipped_file("config", "fireflyhpc.example.toml").read_text(encoding="utf-8")
