"""Reading a remote process's output line by line (both backends' RemoteProcess)."""

from __future__ import annotations

import time
from typing import Callable

Read = Callable[[float | None], "bytes | None"]  # a chunk, b"" at EOF, None: none in time


class LineBuffer:
    """Cuts a stream read in chunks by ``read(timeout)`` into lines."""

    def __init__(self, read: Read) -> None:
        self._read = read
        self._buffer = b""
        self._eof = False

    def readline(self, timeout: float | None = None) -> bytes | None:
        """A line with its newline, the rest at EOF (``b""`` once drained), None on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._buffer and not self._eof:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            chunk = self._read(left)
            if chunk is None:
                continue
            if chunk == b"":
                self._eof = True
            self._buffer += chunk
        line, sep, rest = self._buffer.partition(b"\n")
        self._buffer = rest
        return line + sep


__all__ = ["LineBuffer"]
