"""Value kinds shared by the config file, the job templates and the shell aliases.

Each validator takes a raw value (from TOML, a flag, an environment variable or a
``--set KEY=VALUE``) and returns it normalized, or raises :class:`ValueError` whose
text says what was expected. Callers add *where* the value came from and turn it
into a :class:`~fireflyhpc.errors.ConfigError`; nothing here knows about files.
"""

from __future__ import annotations

import re
from typing import Any, Callable

Validator = Callable[[Any], Any]

# Slurm accepts more characters in partition/account names than this, but these are
# what real sites use and they are safe both on an #SBATCH line and in a shell.
_SLURM_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}")
_HOST = re.compile(r"[A-Za-z0-9_\[][A-Za-z0-9_.@%+:\[\]-]{0,252}")
_NODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,252}")
_TEMPLATE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_CONSTRAINT = re.compile(r"[A-Za-z0-9_\[(][A-Za-z0-9_.&|,*\[\]()!:-]{0,255}")
_MEMORY = re.compile(r"([0-9]{1,9})([KMGTkmgt]?)")
_OUTPUT = re.compile(r"[A-Za-z0-9_./%+@-][A-Za-z0-9_./%+@=-]{0,1023}")
_COMMAND_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}")
_FUNCTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")

# Slurm's time limit forms: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S.
_TIME_FORMS = (
    re.compile(r"(?P<m>\d{1,7})"),
    re.compile(r"(?P<m>\d{1,7}):(?P<s>\d{1,2})"),
    re.compile(r"(?P<h>\d{1,5}):(?P<m>\d{1,2}):(?P<s>\d{1,2})"),
    re.compile(r"(?P<d>\d{1,4})-(?P<h>\d{1,2})"),
    re.compile(r"(?P<d>\d{1,4})-(?P<h>\d{1,2}):(?P<m>\d{1,2})"),
    re.compile(r"(?P<d>\d{1,4})-(?P<h>\d{1,2}):(?P<m>\d{1,2}):(?P<s>\d{1,2})"),
)
TIME_EXPECTED = "a Slurm time limit like 30, 1:30:00 or 2-00:00:00"


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected {what}, got {type(value).__name__}")
    return value


def _match(regex: re.Pattern[str], value: Any, what: str) -> str:
    text = _text(value, what)
    if not regex.fullmatch(text):
        raise ValueError(f"expected {what}")
    return text


def slurm_name(value: Any) -> str:
    """A partition, account, QOS or job name: letters, digits, ``_ . + -``."""
    return _match(_SLURM_NAME, value, "a name of letters, digits and _ . + - (at most 64)")


def host(value: Any) -> str:
    """A login host: an ssh_config alias, a host name or ``user@host``."""
    return _match(_HOST, value, "an ssh host or ssh_config alias (no spaces, not starting with -)")


def node_name(value: Any) -> str:
    """A compute node name, safe to pass through a remote shell unquoted."""
    return _match(_NODE, value, "a node name of letters, digits and _ . -")


def template_name(value: Any) -> str:
    """The name of a job template (file name without ``.sbatch``)."""
    return _match(_TEMPLATE_NAME, value, "a template name of letters, digits and _ . -")


def function_name(value: Any) -> str:
    """A shell function name valid in bash, zsh and fish."""
    return _match(_FUNCTION_NAME, value, "a shell function name of letters, digits, _ and -")


def constraint(value: Any) -> str:
    """A Slurm ``--constraint`` feature expression (no spaces or quotes)."""
    return _match(_CONSTRAINT, value, "a feature expression like 'intel&ib' without spaces")


def output_path(value: Any) -> str:
    """An sbatch ``--output`` pattern: no spaces, quotes or shell characters."""
    return _match(_OUTPUT, value, "an output path pattern like fireflyhpc-%j.out (no spaces)")


def slurm_time(value: Any) -> str:
    """A Slurm time limit; integers are taken as minutes. Returns Slurm's text form."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    text = _text(value, TIME_EXPECTED)
    for form in _TIME_FORMS:
        match = form.fullmatch(text)
        if match:
            parts = match.groupdict()
            limits = {"h": 24 if "d" in parts else None, "m": 60, "s": 60}
            for key, limit in limits.items():
                # The leading field may be large (e.g. 90 minutes); inner fields may not.
                leading = key == next(iter(parts))
                if key in parts and limit and not leading and int(parts[key]) >= limit:
                    raise ValueError(f"expected {TIME_EXPECTED}")
            if time_seconds(text) == 0:
                raise ValueError("expected a time limit above zero")
            return text
    raise ValueError(f"expected {TIME_EXPECTED}")


def time_seconds(text: str) -> int:
    """Seconds in a (valid) Slurm time limit string."""
    for form in _TIME_FORMS:
        match = form.fullmatch(text)
        if match:
            p = {k: int(v) for k, v in match.groupdict().items()}
            return ((p.get("d", 0) * 24 + p.get("h", 0)) * 60 + p.get("m", 0)) * 60 + p.get("s", 0)
    raise ValueError(f"expected {TIME_EXPECTED}")


def memory(value: Any) -> str:
    """Slurm memory: a number with an optional K/M/G/T suffix (default unit M)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    text = _text(value, "memory like 4G or 500M")
    match = _MEMORY.fullmatch(text)
    if not match:
        raise ValueError("expected memory like 4G or 500M")
    return match.group(1) + match.group(2).upper()


def _integer(value: Any, low: int, high: int, what: str) -> int:
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,9}", value):
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"expected {what}")
    return value


def positive_int(value: Any) -> int:
    """A whole number from 1 up (CPU counts)."""
    return _integer(value, 1, 1_000_000, "a whole number of at least 1")


def count(value: Any) -> int:
    """A whole number from 0 up (GPU counts)."""
    return _integer(value, 0, 1_000_000, "a whole number of at least 0")


def port(value: Any) -> int:
    """A TCP port number, 1-65535."""
    return _integer(value, 1, 65535, "a TCP port number 1-65535")


def port_range(value: Any) -> tuple[int, int]:
    """``[LOW, HIGH]`` or ``"LOW-HIGH"``, ports 1024-65535, LOW <= HIGH."""
    what = "a port range like [8000, 8999] or \"8000-8999\" within 1024-65535"
    if isinstance(value, str) and re.fullmatch(r"\d{1,5}-\d{1,5}", value):
        value = [int(v) for v in value.split("-")]
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        raise ValueError(f"expected {what}")
    low, high = value
    if not 1024 <= low <= high <= 65535:
        raise ValueError(f"expected {what}")
    return (low, high)


def listen_ports(value: Any) -> tuple[int, int]:
    """Where a server may listen: ``0`` (any free port), a port ``N``, or a range
    ``LOW-HIGH`` (as :func:`port_range`); returned as ``(LOW, HIGH)``."""
    if isinstance(value, str) and "-" in value:
        return port_range(value)
    if value in (0, "0"):
        return (0, 0)
    try:
        number = port(value)
    except ValueError:
        raise ValueError("expected 0 (any free port), a port 1-65535 or a range like "
                         "8000-8999") from None
    return (number, number)


def choice(*options: str) -> Validator:
    """A validator accepting exactly one of ``options``."""
    expected = " or ".join(repr(o) for o in options)

    def check(value: Any) -> str:
        if value not in options:
            raise ValueError(f"expected {expected}")
        return str(value)

    check.__doc__ = f"One of {expected}."
    return check


def shell_lines(value: Any) -> list[str]:
    """A list of shell lines (environment setup), each a single line without NUL."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("expected a list of shell lines, e.g. [\"module load python\"]")
    for line in value:
        if "\n" in line or "\r" in line or "\0" in line:
            raise ValueError("expected one shell line per list item (no newlines)")
    return list(value)


def python_command(value: Any) -> str:
    """The remote interpreter: an absolute path (spaces and other characters allowed:
    it is only ever passed as one quoted argument) or a command name found on PATH."""
    text = _text(value, "an absolute path or a command name like python3")
    if _COMMAND_NAME.fullmatch(text):
        return text
    if text.startswith("/") and len(text) <= 4096 and text.isprintable():
        return text
    raise ValueError("expected an absolute path or a command name like python3 "
                     "(~ is not expanded)")


# The payloads fireflyhpc itself serves (any other payload value is a command line).
PAYLOAD_KINDS = ("builtin", "firefly")


def payload(value: Any) -> str:
    """``builtin``, ``firefly`` or a command line containing ``{port}``."""
    text = _text(value, "'builtin', 'firefly' or a command containing {port}")
    if text in PAYLOAD_KINDS:
        return text
    if "{port}" not in text or "\n" in text or "\0" in text:
        raise ValueError("expected 'builtin', 'firefly' or a one-line command containing {port}")
    return text
