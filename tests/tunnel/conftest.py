"""Fixtures of the tunnel tests (defined in tunnel_helpers.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tunnel_helpers import addr_server, loop_server, script_dir, start_tunnel  # noqa: E402

__all__ = ["addr_server", "loop_server", "script_dir", "start_tunnel"]
