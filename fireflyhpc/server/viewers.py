"""Which web app the server puts at ``/``: Firefly's own, the bundled one, or a folder.

``--app`` takes ``auto`` (Firefly's app when the ``firefly`` package is
installed, else the bundled viewer), ``firefly``, ``firefly-flask`` (Firefly's
own Flask server behind the token: :mod:`fireflyhpc.server.firefly_flask`),
``builtin``, or a PATH to a directory with an ``index.html``. The ``firefly`` package is located without
importing it (importing it pulls in numpy, h5py and more); its files are served
read-only from where it is installed.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from importlib import resources

from fireflyhpc.errors import ConfigError, ServerError

FIREFLY = "firefly"
FIREFLY_FLASK = "firefly-flask"
BUILTIN = "builtin"
CUSTOM = "custom"


@dataclass(frozen=True)
class WebApp:
    """A web app: its kind and the realpath of the directory holding index.html."""

    kind: str
    root: str


def firefly_app_dir() -> str | None:
    """Directory of the installed ``firefly`` package's web app, or None."""
    try:
        spec = importlib.util.find_spec("firefly")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        if os.path.isfile(os.path.join(location, "index.html")) and \
                os.path.isdir(os.path.join(location, "static")):
            return os.path.realpath(location)
    return None


def builtin_app_dir() -> str | None:
    """Directory of the bundled viewer (``fireflyhpc/data/viewer``), or None."""
    try:
        root = resources.files("fireflyhpc") / "data" / "viewer"
    except ModuleNotFoundError:  # pragma: no cover - fireflyhpc is importable here
        return None
    path = os.fspath(root)  # type: ignore[call-overload]
    if os.path.isfile(os.path.join(path, "index.html")):
        return os.path.realpath(path)
    return None


def choose_app(choice: str) -> WebApp:
    """Resolve an ``--app`` value to a WebApp.

    Raises ConfigError for a PATH without index.html or an unavailable choice,
    ServerError when no viewer at all is installed.
    """
    if choice == "auto":
        firefly = firefly_app_dir()
        if firefly:
            return WebApp(FIREFLY, firefly)
        builtin = builtin_app_dir()
        if builtin:
            return WebApp(BUILTIN, builtin)
        raise ServerError("no viewer found: neither the firefly package nor the "
                          "bundled viewer (fireflyhpc/data/viewer) is installed")
    if choice in (FIREFLY, FIREFLY_FLASK):
        firefly = firefly_app_dir()
        if not firefly:
            raise ConfigError(f"--app {choice}: the firefly package is not installed",
                              hint="pip install firefly, or use --app builtin")
        return WebApp(choice, firefly)
    if choice == BUILTIN:
        builtin = builtin_app_dir()
        if not builtin:
            raise ServerError("the bundled viewer (fireflyhpc/data/viewer) is missing "
                              "from this installation")
        return WebApp(BUILTIN, builtin)
    path = os.path.realpath(os.path.expanduser(choice))
    if not os.path.isfile(os.path.join(path, "index.html")):
        raise ConfigError(f"--app {choice}: not auto, firefly, firefly-flask, builtin, or a directory "
                          "containing index.html")
    return WebApp(CUSTOM, path)
