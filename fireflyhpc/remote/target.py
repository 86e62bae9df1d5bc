"""What a remote Python interpreter is, asked once over SSH, and what follows from it.

:func:`probe_python` runs a small program with the cluster's interpreter and reads
back one JSON line; :class:`RemotePython` holds the answer. The rest is pure: the
wheel tags pip must download for that interpreter (:func:`pip_target_args`), the
PEP 508 marker environment (:attr:`RemotePython.markers`), the default install
prefix (:func:`default_prefix`) and the ``bash -c`` wrapper that applies a
profile's setup lines before a command (:func:`with_setup`).
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, Sequence

from fireflyhpc.errors import ConfigError, RemoteCommandError

MIN_PYTHON = (3, 10)
# The oldest glibc manylinux_2_x wheels target; older ones use the legacy aliases.
_MANYLINUX_FLOOR = 17
SETUP_ARGV0 = "fireflyhpc-setup"

# Runs on the cluster with any Python 3 (so it can say "too old" itself): no f-strings.
PROBE_PROGRAM = r"""
import json, os, platform, sys, sysconfig
def has(name):
    try:
        __import__(name)
        return True
    except Exception:
        return False
impl = sys.implementation
iv = impl.version
impl_version = "{0}.{1}.{2}".format(iv.major, iv.minor, iv.micro)
if iv.releaselevel != "final":
    impl_version += iv.releaselevel[0] + str(iv.serial)
print(json.dumps({
    "executable": sys.executable,
    "version": list(sys.version_info[:3]),
    "implementation": impl.name,
    "platform": sysconfig.get_platform(),
    "libc": list(platform.libc_ver()),
    "home": os.path.expanduser("~"),
    "data_home": os.environ.get("XDG_DATA_HOME", ""),
    "venv": has("venv"),
    "markers": {
        "implementation_name": impl.name,
        "implementation_version": impl_version,
        "os_name": os.name,
        "platform_machine": platform.machine(),
        "platform_release": platform.release(),
        "platform_system": platform.system(),
        "platform_version": platform.version(),
        "python_full_version": platform.python_version(),
        "platform_python_implementation": platform.python_implementation(),
        "python_version": ".".join(platform.python_version_tuple()[:2]),
        "sys_platform": sys.platform,
    },
}))
"""


class Runs(Protocol):
    """The part of :class:`fireflyhpc.ssh.SSHConnection` this module needs."""

    def run(self, argv: Sequence[str], *, timeout: float | None = None, check: bool = True,
            input: bytes | str | None = None,  # noqa: A002
            env: Mapping[str, str] | None = None) -> Any: ...

    def write_file(self, path: str, data: bytes | str) -> None: ...


@dataclass(frozen=True)
class RemotePython:
    """One interpreter on the cluster, as it described itself."""

    command: str  # what we ran (``python3``, a path)
    executable: str
    version: tuple[int, int, int]
    implementation: str
    platform: str  # sysconfig.get_platform(), e.g. linux-x86_64
    libc: tuple[str, str]  # ("glibc", "2.36") or ("", "")
    home: str
    data_home: str = ""
    has_venv: bool = True
    markers: Mapping[str, str] = field(default_factory=dict)

    @property
    def version_text(self) -> str:
        return ".".join(str(part) for part in self.version)

    @property
    def machine(self) -> str:
        return self.platform.split("-", 1)[-1].replace("-", "_").replace(".", "_")

    def require_supported(self) -> None:
        """Raise ConfigError (with the fix) unless this Python can host fireflyhpc."""
        if self.version[:2] < MIN_PYTHON:
            need = ".".join(map(str, MIN_PYTHON))
            raise ConfigError(
                f"{self.command} on the cluster is Python {self.version_text}; fireflyhpc "
                f"needs {need} or newer",
                hint=f"pass --python with a newer interpreter (e.g. python{need}), or add a "
                     "setup line such as \"module load python\" to the cluster profile")
        if not self.has_venv:
            raise ConfigError(
                f"{self.command} on the cluster ({self.executable}) has no venv module",
                hint="ask the admins for the python3-venv package, or use another "
                     "interpreter with --python or a \"module load python\" setup line")


def parse_probe(command: str, stdout: str) -> RemotePython:
    """Read the probe's JSON (its last non-empty stdout line); ConfigError if it is not there.

    Login scripts may print banners first, so only the last line counts.
    """
    lines = [line for line in stdout.splitlines() if line.strip()]
    try:
        data = json.loads(lines[-1])
        version = tuple(int(part) for part in data["version"][:3])
        libc = data.get("libc") or ["", ""]
        return RemotePython(
            command=command, executable=str(data["executable"]),
            version=(version[0], version[1], version[2]),
            implementation=str(data["implementation"]), platform=str(data["platform"]),
            libc=(str(libc[0]), str(libc[1])), home=str(data["home"]),
            data_home=str(data.get("data_home") or ""), has_venv=bool(data.get("venv")),
            markers={str(k): str(v) for k, v in dict(data.get("markers") or {}).items()})
    except (IndexError, ValueError, KeyError, TypeError) as exc:
        shown = " | ".join(lines[-3:])[:300] or "nothing"
        raise ConfigError(f"{command} on the cluster did not answer like Python 3 "
                          f"(printed: {shown})") from exc


def with_setup(setup: Sequence[str], argv: Sequence[str]) -> list[str]:
    """``argv`` run after the profile's ``setup`` lines (in bash), or ``argv`` itself.

    The lines are the script; ``argv`` is passed as positional parameters and run
    with ``exec "$@"``, so its items are never re-parsed by a shell.
    """
    if not setup:
        return list(argv)
    script = "\n".join([*setup, 'exec "$@"'])
    return ["bash", "-c", script, SETUP_ARGV0, *argv]


def probe_python(conn: Runs, python: str, setup: Sequence[str] = ()) -> RemotePython:
    """Ask ``python`` on the cluster what it is.

    Raises ConfigError when it is missing or does not behave like Python 3, SSHError
    when the connection fails.
    """
    argv = with_setup(setup, [python, "-c", PROBE_PROGRAM])
    result = conn.run(argv, check=False, timeout=120)
    if result.exit_code == 127 or (result.exit_code != 0 and "not found" in result.stderr):
        raise ConfigError(f"{python} not found on the cluster",
                          hint="pass --python with the interpreter to use, or add a setup "
                               "line such as \"module load python\" to the cluster profile")
    if result.exit_code != 0:
        raise RemoteCommandError([python, "-c", "<probe>"], result.exit_code, result.stderr,
                                 host=getattr(result, "host", None) or None)
    return parse_probe(python, result.stdout)


def default_prefix(target: RemotePython, version: str) -> str:
    """``$XDG_DATA_HOME`` (default ``~/.local/share``) ``/fireflyhpc/venv-VERSION``."""
    data = target.data_home if target.data_home.startswith("/") else \
        posixpath.join(target.home, ".local", "share")
    return posixpath.join(data, "fireflyhpc", f"venv-{version}")


def resolve_prefix(prefix: str | None, target: RemotePython, version: str) -> str:
    """The absolute, normalized install prefix (``~`` meaning the remote home).

    Raises ConfigError for a relative path or one with characters pip and venv
    scripts do not survive (spaces, quotes, newlines).
    """
    if not prefix:
        return default_prefix(target, version)
    if prefix == "~" or prefix.startswith("~/"):
        prefix = target.home + prefix[1:]
    elif not prefix.startswith("/"):
        prefix = posixpath.join(target.home, prefix)
    bad = [c for c in prefix if c.isspace() or c in "'\"\\$`;&|<>*?!#"]
    if bad:
        raise ConfigError(f"--prefix {prefix!r}: use a path without spaces or shell "
                          "characters (venv scripts break on them)")
    normal = posixpath.normpath(prefix)
    if normal in ("/", target.home.rstrip("/")):
        raise ConfigError(f"--prefix {prefix!r}: refusing to install into {normal} itself; "
                          "name a directory of its own")
    return normal


def pip_target_args(target: RemotePython) -> list[str]:
    """pip download options selecting wheels for ``target`` (binary only).

    Linux/glibc gets every manylinux tag up to its glibc; other platforms their
    own tag. Pure-Python wheels always match.
    """
    major, minor = target.version[:2]
    impl = {"cpython": "cp", "pypy": "pp"}.get(target.implementation, target.implementation)
    args = ["--only-binary=:all:", "--python-version", f"{major}.{minor}",
            "--implementation", impl]
    if impl == "cp":
        args += ["--abi", f"cp{major}{minor}"]
    for platform in platform_tags(target):
        args += ["--platform", platform]
    return args


def platform_tags(target: RemotePython) -> list[str]:
    """Wheel platform tags ``target`` accepts, most specific first."""
    arch = target.machine
    if not target.platform.startswith("linux"):
        return [target.platform.replace("-", "_").replace(".", "_")]
    tags: list[str] = []
    if target.libc[0] == "glibc":
        try:
            glibc_minor = int(target.libc[1].split(".")[1])
        except (IndexError, ValueError):
            glibc_minor = _MANYLINUX_FLOOR
        tags += [f"manylinux_2_{m}_{arch}" for m in range(glibc_minor, _MANYLINUX_FLOOR - 1, -1)]
        legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
        tags += [f"{name}_{arch}" for m, name in legacy.items() if m <= glibc_minor]
    tags.append(f"linux_{arch}")
    return tags

