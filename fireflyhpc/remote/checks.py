"""What one `fireflyhpc doctor` check says: :class:`Check` and its statuses."""

from __future__ import annotations

from dataclasses import dataclass

from fireflyhpc.errors import FireflyHPCError

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"


@dataclass(frozen=True)
class Check:
    """One line of the report: what was checked, how it went, and what to do."""

    name: str
    status: str  # pass | warn | fail | skip
    detail: str
    hint: str | None = None


def error_text(exc: BaseException) -> str:
    """An error in one line: ours as they are, anything else with its type."""
    return str(exc) if isinstance(exc, FireflyHPCError) else f"{type(exc).__name__}: {exc}"
