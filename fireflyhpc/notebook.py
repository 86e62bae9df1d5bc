"""Show a payload server inside a Jupyter notebook."""

from __future__ import annotations

from typing import Any

from fireflyhpc.errors import ConfigError


def show(url_or_handle: Any, width: int | str = 700, height: int | str = 700) -> Any:
    """An ``IPython.display.IFrame`` of the server (its token URL) to display.

    ``url_or_handle`` is a URL string or a handle from
    :func:`fireflyhpc.server.spawn_server` (its ``url``, token included, is used).
    Raises ConfigError if IPython is not installed or the argument is neither.
    """
    url = url_or_handle if isinstance(url_or_handle, str) else getattr(url_or_handle, "url", None)
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ConfigError("show() needs an http(s) URL or a server handle, not a "
                          f"{type(url_or_handle).__name__}")
    try:
        from IPython.display import IFrame
    except ImportError:
        raise ConfigError("fireflyhpc.notebook.show needs IPython (pip install ipython), "
                          f"or open {url} in a browser") from None
    return IFrame(url, width=width, height=height)
