"""Slurm host lists (``node[1-3,5]``, ``gpu[01-02]-ib,login1``) expanded to names."""

from __future__ import annotations

import re

from fireflyhpc.errors import SchedulerError

_EMPTY = {"", "(null)", "None", "n/a", "N/A"}
_RANGE = re.compile(r"(\d+)(?:-(\d+))?")
_MAX_NODES = 100_000


def _split_top(text: str) -> list[str]:
    """Split on commas that are not inside brackets."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char == "[":
            depth += 1
            if depth > 1:
                raise ValueError("nested brackets")
        elif char == "]":
            depth -= 1
            if depth < 0:
                raise ValueError("unbalanced ]")
        elif char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth != 0:
        raise ValueError("unbalanced [")
    parts.append(text[start:])
    return parts


def _expand_ranges(body: str) -> list[str]:
    """``1-3,05`` -> ``["1", "2", "3", "05"]`` keeping zero padding."""
    out: list[str] = []
    for item in body.split(","):
        match = _RANGE.fullmatch(item)
        if not match:
            raise ValueError(f"bad range {item!r}")
        low, high = match.group(1), match.group(2) or match.group(1)
        if int(high) < int(low) or int(high) - int(low) > _MAX_NODES:
            raise ValueError(f"bad range {item!r}")
        width = len(low) if low.startswith("0") else 0
        out.extend(str(n).zfill(width) for n in range(int(low), int(high) + 1))
    return out


def _expand_one(pattern: str) -> list[str]:
    """One host pattern, possibly with several bracket groups: ``r[1-2]n[1-2]``."""
    match = re.search(r"\[([^\]]*)\]", pattern)
    if not match:
        if any(c in pattern for c in "[] "):
            raise ValueError(f"bad host name {pattern!r}")
        return [pattern]
    head, tail = pattern[: match.start()], pattern[match.end():]
    return [head + item + rest for item in _expand_ranges(match.group(1))
            for rest in _expand_one(tail)]


def expand_nodelist(text: str) -> list[str]:
    """Expand a Slurm node list into host names, in order.

    ``""``/``(null)`` give ``[]``. Raises SchedulerError (with ``raw``) for text that
    is not a host list.
    """
    text = text.strip()
    if text in _EMPTY:
        return []
    try:
        names: list[str] = []
        for part in _split_top(text):
            if not part:
                raise ValueError("empty host name")
            names.extend(_expand_one(part))
    except ValueError as exc:
        raise SchedulerError(f"cannot read Slurm node list {text!r}: {exc}", raw=text) from None
    if len(names) > _MAX_NODES:
        raise SchedulerError(f"Slurm node list {text[:40]!r}... is too long", raw=text)
    return names
