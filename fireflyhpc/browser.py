"""Opening a URL in the user's graphical browser (``serve`` and ``connect`` share it)."""

from __future__ import annotations

import os
import sys
import threading
import webbrowser


def has_display() -> bool:
    """False on Linux without X11 or Wayland (an SSH session, a container), where
    :mod:`webbrowser` would fall back to a text-mode browser that takes the terminal."""
    if not sys.platform.startswith("linux"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def open_browser(url: str) -> bool:
    """Open ``url`` without blocking; return False (and do nothing) without a display."""
    if not has_display():
        return False
    threading.Thread(target=webbrowser.open, args=(url,), name="browser", daemon=True).start()
    return True
