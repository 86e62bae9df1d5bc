"""The viewer's URL with its access token: one builder for ``serve``, the Python API
and ``connect`` (standard library only, so importing it pulls in neither SSH nor
flask)."""

from __future__ import annotations

from urllib.parse import quote


def token_url(base_url: str, token: str | None) -> str:
    """``base_url`` with ``?token=TOKEN`` appended, the token URL-quoted (every
    character outside letters, digits and ``_.-~``); ``base_url`` itself when
    ``token`` is None (a payload that checks no token)."""
    return base_url if token is None else f"{base_url}?token={quote(token, safe='')}"
