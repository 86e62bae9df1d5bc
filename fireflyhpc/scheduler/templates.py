"""Slurm job templates: finding them, and rendering them safely.

A template is a batch script with placeholders ``{{ name }}``. The names are a fixed
vocabulary (:data:`PLACEHOLDERS`), each with a validator. Rendering rules:

* On an ``#SBATCH`` line a value is validated and must consist of characters that
  need no quoting; a line whose placeholder has no value is left out, so optional
  directives (account, memory, ...) simply disappear.
* On any other line a value is validated, then shell-quoted with :func:`shlex.quote`;
  a placeholder without a value there is an error.
* ``{{ setup }}`` stands alone on its line and becomes the profile's setup lines
  (the user's own shell code, one line each), or nothing.
* An unknown or malformed placeholder, or a bad value, is a ConfigError naming the
  template, the line and the placeholder. A broken script is never returned.

Shipped templates live in ``slurm_templates/``; a file ``NAME.sbatch`` in the user's
template folder (next to the config file) overrides the shipped one.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from fireflyhpc import validate as v
from fireflyhpc.config import ResolvedSettings
from fireflyhpc.errors import ConfigError
from fireflyhpc.resources import shipped_dir
from fireflyhpc.settings import validators

SUFFIX = ".sbatch"
DEFAULT_OUTPUT = "fireflyhpc-%j.out"


# Every placeholder a template may use, and how its value is checked (from the one
# table, fireflyhpc.settings.SETTINGS: a placeholder and the profile key of the same
# name accept the same values). ``workdir`` is free text: it is always quoted.
PLACEHOLDERS: dict[str, v.Validator] = validators(
    "cluster", "job_name", "partition", "account", "qos", "constraint", "time", "cpus", "mem",
    "gpus", "output", "workdir", "python", "setup")
_LINES_KINDS = {"setup"}

_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# What may stand on an #SBATCH line without quoting (sbatch splits on spaces/quotes).
_DIRECTIVE_SAFE = re.compile(r"[A-Za-z0-9_.,:/%+@=&|*\[\]()!-]+")


@dataclass(frozen=True)
class Template:
    """A job template's text and where it was found (``user`` or ``shipped``)."""

    name: str
    text: str
    path: Path
    origin: str


def _fail(template: str, lineno: int, message: str) -> ConfigError:
    return ConfigError(f"template {template} line {lineno}: {message}")


def _value(template: str, lineno: int, key: str, values: Mapping[str, Any]) -> Any:
    """The validated value of placeholder ``key`` (None when unset)."""
    if key not in PLACEHOLDERS:
        known = ", ".join(PLACEHOLDERS)
        raise _fail(template, lineno, f"unknown placeholder {{{{ {key} }}}}; known: {known}")
    raw = values.get(key)
    if raw is None or (key in _LINES_KINDS and not raw):
        return None
    try:
        return PLACEHOLDERS[key](raw)
    except ValueError as exc:
        shown = raw if not isinstance(raw, str) else repr(raw)
        raise _fail(template, lineno, f"{{{{ {key} }}}} = {shown}: {exc}") from None


def _placeholders(template: str, lineno: int, line: str) -> list[str]:
    keys = [m.group(1) for m in _PLACEHOLDER.finditer(line)]
    for key in keys:
        if not _IDENT.fullmatch(key):
            raise _fail(template, lineno, f"malformed placeholder {{{{ {key} }}}}")
    rest = _PLACEHOLDER.sub("", line)
    if "{{" in rest or "}}" in rest:
        raise _fail(template, lineno, "malformed placeholder (unmatched {{ or }})")
    return keys


def _render_directive(template: str, lineno: int, line: str,
                      values: Mapping[str, Any]) -> str | None:
    found = {k: _value(template, lineno, k, values) for k in _placeholders(template, lineno, line)}
    for key, value in found.items():
        if key in _LINES_KINDS:
            raise _fail(template, lineno, f"{{{{ {key} }}}} cannot be used on an #SBATCH line")
        if value is not None and not _DIRECTIVE_SAFE.fullmatch(str(value)):
            raise _fail(template, lineno, f"{{{{ {key} }}}} = {value!r}: cannot stand on an "
                        "#SBATCH line (spaces, quotes or shell characters)")
    if any(value is None for value in found.values()):
        return None
    return _PLACEHOLDER.sub(lambda m: str(found[m.group(1)]), line)


def _render_body(template: str, lineno: int, line: str,
                 values: Mapping[str, Any]) -> list[str]:
    keys = _placeholders(template, lineno, line)
    found = {k: _value(template, lineno, k, values) for k in keys}
    lines_keys = [k for k in keys if k in _LINES_KINDS]
    if lines_keys:
        key = lines_keys[0]
        if len(keys) != 1 or not _PLACEHOLDER.fullmatch(line.strip()):
            raise _fail(template, lineno, f"{{{{ {key} }}}} must stand alone on its line")
        indent = line[: len(line) - len(line.lstrip())]
        return [indent + item for item in (found[key] or [])]
    for key, value in found.items():
        if value is None:
            raise _fail(template, lineno, f"{{{{ {key} }}}} has no value "
                        f"(set it in the cluster profile or with --set {key}=VALUE)")
    return [_PLACEHOLDER.sub(lambda m: shlex.quote(str(found[m.group(1)])), line)]


def render_template(text: str, values: Mapping[str, Any], *, name: str = "<template>") -> str:
    """Render template ``text`` with ``values`` (placeholder -> value, None = unset).

    Pure. Returns the finished script; raises ConfigError naming ``name``, the line
    and the placeholder for an unknown/malformed placeholder or a bad value.
    """
    out: list[str] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("#SBATCH"):
            rendered = _render_directive(name, lineno, line, values)
            if rendered is not None:
                out.append(rendered)
        else:
            out.extend(_render_body(name, lineno, line, values))
    return "\n".join(out) + "\n"


def template_values(settings: ResolvedSettings,
                    overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Placeholder values for ``settings``, then ``overrides`` (``--set KEY=VALUE``).

    Raises ConfigError for an override that is not a known placeholder.
    """
    values: dict[str, Any] = {
        "cluster": settings.cluster, "job_name": settings.job_name,
        "partition": settings.partition, "account": settings.account, "qos": settings.qos,
        "constraint": settings.constraint, "time": settings.time, "cpus": settings.cpus,
        "mem": settings.mem, "gpus": settings.gpus, "output": DEFAULT_OUTPUT,
        "workdir": None, "python": settings.python, "setup": list(settings.setup),
    }
    for key, value in (overrides or {}).items():
        if key not in PLACEHOLDERS:
            raise ConfigError(f"--set {key}: unknown placeholder; known: {', '.join(PLACEHOLDERS)}")
        values[key] = value
    return values


def parse_assignments(items: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``["KEY=VALUE", ...]`` from ``--set`` as a dict; ConfigError for one without ``=``."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        out[key.strip()] = value
    return out


def _read(path: Path, name: str, origin: str) -> Template:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read template {name} at {path}: {exc}") from None
    return Template(name=name, text=text, path=path, origin=origin)


def find_template(name: str, user_dir: Path | None) -> Template:
    """The template ``name``: the user's ``NAME.sbatch`` first, then the shipped one.

    Raises ConfigError for a bad name or one found nowhere (listing the known ones).
    """
    try:
        v.template_name(name)
    except ValueError as exc:
        raise ConfigError(f"template {name!r}: {exc}") from None
    if user_dir is not None and (user_dir / (name + SUFFIX)).is_file():
        return _read(user_dir / (name + SUFFIX), name, "user")
    shipped = shipped_dir("slurm_templates") / (name + SUFFIX)
    if shipped.is_file():
        return _read(shipped, name, "shipped")
    known = ", ".join(t.name for t in list_templates(user_dir)) or "none"
    raise ConfigError(f"no template called {name!r}; known templates: {known}")


def list_templates(user_dir: Path | None) -> list[Template]:
    """All templates by name, a user template replacing a shipped one of that name."""
    found: dict[str, Template] = {}
    folders = [(shipped_dir("slurm_templates"), "shipped")]
    if user_dir is not None and user_dir.is_dir():
        folders.append((user_dir, "user"))
    for folder, origin in folders:
        for path in sorted(folder.glob("*" + SUFFIX)):
            name = path.name[: -len(SUFFIX)]
            try:
                v.template_name(name)
            except ValueError:
                continue
            found[name] = _read(path, name, origin)
    return [found[name] for name in sorted(found)]
