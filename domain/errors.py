"""The one error hierarchy of carbon-rewards.

Each error carries a stable machine-readable ``code`` and a ``kind`` that says what went wrong in
terms a caller can act on; the API maps kinds to HTTP statuses in one place (``api.errors``).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorKind(StrEnum):
    INVALID = "invalid"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


class CarbonRewardsError(Exception):
    """Base of every error the service raises on purpose."""

    code: str = "error"
    kind: ErrorKind = ErrorKind.INTERNAL
    title: str = "Error"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra


class InvalidInput(CarbonRewardsError):
    code = "invalid_input"
    kind = ErrorKind.INVALID
    title = "The request is not valid"


class NotFound(CarbonRewardsError):
    code = "not_found"
    kind = ErrorKind.NOT_FOUND
    title = "Not found"


class Conflict(CarbonRewardsError):
    code = "conflict"
    kind = ErrorKind.CONFLICT
    title = "Conflict"


class ServiceUnavailable(CarbonRewardsError):
    code = "service_unavailable"
    kind = ErrorKind.UNAVAILABLE
    title = "A dependency is unavailable"
