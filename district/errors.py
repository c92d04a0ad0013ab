"""Errors the district platform raises on purpose."""

from __future__ import annotations

from edge.errors import EdgeError


class DistrictError(EdgeError):
    """Base of the platform's errors."""


class DatabaseError(DistrictError):
    """PostgreSQL cannot be reached or refused a statement; the message says which and why."""


class SearchRefusedError(DistrictError):
    """A police search was refused (missing case or officer, role, rate limit, bad input)."""

    def __init__(self, reason: str, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after_s = retry_after_s
