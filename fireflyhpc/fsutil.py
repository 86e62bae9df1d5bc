"""Writing files so that no reader ever sees half of one (standard library only).

Every state file fireflyhpc keeps (session records, the server registry, ready
files), every file it writes for the user (the config file, a shell rc block)
and the small JSON files of an exported dataset go through :func:`atomic_write`.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

_TEMP_ATTEMPTS = 100


def atomic_write(path: str | os.PathLike[str], data: str | bytes, *,
                 mode: int | None = 0o600) -> None:
    """Replace ``path`` with ``data`` in one step: readers see the old file or the new one.

    The data goes into a temporary file in the same folder, is flushed to disk
    (fsync), then renamed over ``path``. ``mode`` is the new file's permission bits,
    exactly (the umask does not apply, and the file is never wider than 0600 while
    it is written); None gives what ``open(path, "w")`` would (0666 less the umask).
    Text is written as UTF-8.

    Raises OSError naming ``path`` (never the temporary file) when the folder is
    missing, not writable, or the disk is full; the temporary file is removed on
    any failure, and ``path`` is then left as it was.
    """
    target = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    tmp: Path | None = None
    try:
        fd, tmp = _create_temp(target, 0o666 if mode is None else 0o600)
        with os.fdopen(fd, "wb") as handle:
            if mode is not None:
                os.fchmod(handle.fileno(), mode)
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
        tmp = None
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), str(target)) from exc
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def _create_temp(target: Path, create_mode: int) -> tuple[int, Path]:
    """A new, exclusively created file next to ``target``: its descriptor and path."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(_TEMP_ATTEMPTS):
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, flags, create_mode), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name next to {target}")
