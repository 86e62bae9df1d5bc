"""The terminal line shared by a progress line and anything that asks the user.

On a terminal `connect` shows its progress as one line rewritten in place (``\\r``),
so the cursor stays at the end of that line. Whatever then asks on the terminal
(our prompter for a passphrase, a password or a one-time code; an ``ssh`` child
that reads ``/dev/tty``) would write its prompt right after it:
``connecting to loginPassword:``. So the progress line says here that it is open,
and every asker calls :func:`before_prompt` first, which ends it.
"""

from __future__ import annotations

import threading
from typing import Callable

_lock = threading.Lock()
_open_line: Callable[[], None] | None = None


def line_open(end: Callable[[], None]) -> None:
    """A line without its newline is on the terminal; ``end()`` finishes it."""
    global _open_line
    with _lock:
        _open_line = end


def line_closed(end: Callable[[], None]) -> None:
    """The line ``end`` would finish is finished (by itself)."""
    global _open_line
    with _lock:
        if _open_line == end:
            _open_line = None


def before_prompt() -> None:
    """Something is about to ask on the terminal: end any open line first."""
    global _open_line
    with _lock:
        end, _open_line = _open_line, None
    if end is not None:
        end()
