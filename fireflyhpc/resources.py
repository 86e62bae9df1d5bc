"""Files shipped beside the code: the example config and the Slurm job templates.

In the repository they sit in the top-level ``config/`` and ``slurm_templates/``
folders; a wheel carries them as ``fireflyhpc/config/`` and
``fireflyhpc/slurm_templates/`` (see setup.py). This module finds either.
"""

from __future__ import annotations

from pathlib import Path

import fireflyhpc


def shipped_dir(name: str) -> Path:
    """The folder of shipped files called ``name`` (``config`` or ``slurm_templates``).

    Raises FileNotFoundError when the installation lacks it.
    """
    package = Path(fireflyhpc.__file__).resolve().parent
    for candidate in (package / name, package.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"fireflyhpc installation has no {name}/ folder (looked in {package})")


def shipped_file(folder: str, name: str) -> Path:
    """One shipped file, e.g. ``shipped_file("config", "fireflyhpc.example.toml")``."""
    return shipped_dir(folder) / name
