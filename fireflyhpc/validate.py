"""Value kinds shared by the config file, the job templates, the command line, the
tunnel, the SSH layer and the shell aliases: each rule is written here once.

Each validator takes a raw value (from TOML, a flag, an environment variable or a
``--set KEY=VALUE``) and returns it normalized, or raises :class:`ValueError` whose
text says what was expected. :func:`checked` turns that into a one-line
:class:`~fireflyhpc.errors.ConfigError` naming where the value came from; nothing
here knows about files. :func:`port` is the one TCP port parser (:func:`parse_port`
its one-line-error form).

Built on these: :mod:`fireflyhpc.hostspec` (host names and login hosts as users
write them) and :mod:`fireflyhpc.settings` (the one table from a setting's name to
its validator).
"""

from __future__ import annotations

import re
from typing import Any, Callable

from fireflyhpc.errors import ConfigError

Validator = Callable[[Any], Any]

# Slurm accepts more characters in partition/account names than this, but these are
# what real sites use and they are safe both on an #SBATCH line and in a shell.
_SLURM_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
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


def require_text(value: Any, what: str) -> str:
    """``value`` if it is a string, else ValueError ``"expected WHAT, got TYPE"``."""
    if not isinstance(value, str):
        raise ValueError(f"expected {what}, got {type(value).__name__}")
    return value


def _match(regex: re.Pattern[str], value: Any, what: str) -> str:
    text = require_text(value, what)
    if not regex.fullmatch(text):
        raise ValueError(f"expected {what}")
    return text


def slurm_name(value: Any) -> str:
    """A partition, account, QOS or job name: letters, digits, ``_ . + -``."""
    return _match(_SLURM_NAME, value, "a name of letters, digits and _ . + - (at most 64)")


def template_name(value: Any) -> str:
    """The name of a job template (file name without ``.sbatch``)."""
    return _match(_NAME, value, "a template name of letters, digits and _ . -")


def cluster_name(value: Any) -> str:
    """The name of a cluster profile (``[clusters.NAME]``)."""
    return _match(_NAME, value, "a cluster name of letters, digits and _ . -")


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
    text = require_text(value, TIME_EXPECTED)
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


_DURATION = re.compile(r"([0-9]{1,7})([smhd])")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
DURATION_EXPECTED = "a duration like 90s, 10m, 2h or 0:10:00 (0: none)"
MAX_DURATION = 30 * 86400


def duration(value: Any) -> int:
    """A span of time in seconds: ``NUMBER`` with a unit (``s``, ``m``, ``h``, ``d``), a
    Slurm time form with a colon or dash (``0:10:00``, ``1-00``), or ``0``.

    A bare number other than 0 is refused: Slurm reads it as minutes, a reader of
    seconds would not, and a grace period must not be off by 60 times.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value == 0:
        return 0
    text = require_text(value, DURATION_EXPECTED).strip()
    if text == "0":
        return 0
    match = _DURATION.fullmatch(text)
    if match:
        seconds = int(match.group(1)) * _DURATION_UNITS[match.group(2)]
    elif ":" in text or "-" in text:
        try:
            seconds = time_seconds(slurm_time(text))
        except ValueError:
            raise ValueError(f"expected {DURATION_EXPECTED}") from None
    else:
        raise ValueError(f"expected {DURATION_EXPECTED}")
    if seconds > MAX_DURATION:
        raise ValueError(f"expected {DURATION_EXPECTED}, at most 30 days")
    return seconds


def memory(value: Any) -> str:
    """Slurm memory: a number with an optional K/M/G/T suffix (default unit M)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    text = require_text(value, "memory like 4G or 500M")
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


def port(value: Any, *, allow_zero: bool = False) -> int:
    """A TCP port number 1-65535 (0 too with ``allow_zero``: "any free port"), given
    as an int or as decimal text (surrounding spaces ignored)."""
    low = 0 if allow_zero else 1
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,5}", value.strip()):
        value = int(value.strip())
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= 65535:
        raise ValueError(f"expected a TCP port number from {low} to 65535")
    return value


def local_port(value: Any) -> int:
    """A local port to listen on: 0 (any free port) or 1-65535."""
    return port(value, allow_zero=True)


def parse_port(value: Any, *, what: str = "port", allow_zero: bool = False) -> int:
    """:func:`port`, raising a one-line ConfigError that names ``what`` instead."""
    return int(checked(local_port if allow_zero else port, value, what))


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
    text = require_text(value, "an absolute path or a command name like python3")
    if _COMMAND_NAME.fullmatch(text):
        return text
    if text.startswith("/") and len(text) <= 4096 and text.isprintable():
        return text
    raise ValueError("expected an absolute path or a command name like python3 "
                     "(~ is not expanded)")


# The payloads that are fireflyhpc's own server (its --app values); any other payload
# value is a command line.
PAYLOAD_APPS = ("auto", "builtin", "firefly", "firefly-flask")


def payload(value: Any) -> str:
    """``auto``, ``builtin``, ``firefly``, ``firefly-flask`` or a command line containing
    ``{port}``."""
    text = require_text(value, "'auto', 'builtin', 'firefly', 'firefly-flask' or a "
                        "command containing {port}")
    if text in PAYLOAD_APPS:
        return text
    if "{port}" not in text or "\n" in text or "\0" in text:
        raise ValueError("expected 'auto', 'builtin', 'firefly', 'firefly-flask' or a "
                         "one-line command containing {port}")
    return text


def one_line(value: Any) -> str:
    """Free text on one line (a path, a label); whoever uses it must quote it."""
    if not isinstance(value, str) or "\n" in value or "\r" in value or "\0" in value:
        raise ValueError("expected one line of text")
    return value


def checked(validator: Validator, value: Any, where: str) -> Any:
    """``validator(value)``; its ValueError becomes a one-line ConfigError
    ``"WHERE = VALUE: what was expected"`` (long values shortened)."""
    try:
        return validator(value)
    except ValueError as exc:
        shown = repr(value) if isinstance(value, str) else str(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        raise ConfigError(f"{where} = {shown}: {exc}") from None
