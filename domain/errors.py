"""The one error hierarchy of carbon-rewards.

Each error carries a stable machine-readable ``code`` and a ``kind`` that says what went wrong in
terms a caller can act on; the API maps kinds to HTTP statuses in one place (``api.errors``).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorKind(StrEnum):
    #: The body cannot be read at all (not JSON, nested too deeply): 400, like the framework's own.
    MALFORMED = "malformed"
    INVALID = "invalid"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    RATE_LIMITED = "rate_limited"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    UNAVAILABLE = "unavailable"
    BAD_UPSTREAM = "bad_upstream"
    INTERNAL = "internal"


class CarbonRewardsError(Exception):
    """Base of every error the service raises on purpose."""

    code: str = "error"
    kind: ErrorKind = ErrorKind.INTERNAL
    title: str = "Error"
    #: Keep what the failed request wrote (e.g. a wrong one-time code's attempt count, or a revoked
    #: token family): the request scope then commits instead of rolling back before answering.
    keeps_writes: bool = False

    def __init__(self, detail: str | None = None, *, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.headers = headers or {}
        self.extra = extra


class InvalidInput(CarbonRewardsError):
    code = "invalid_input"
    kind = ErrorKind.INVALID
    title = "The request is not valid"


class MalformedBody(CarbonRewardsError):
    """A body that cannot be read as what the route takes: the same 400 on every route."""

    code = "bad_request"
    kind = ErrorKind.MALFORMED
    title = "Bad request"


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


class BadUpstreamResponse(CarbonRewardsError):
    """A partner or gateway answered, but with something that is not what its contract promises."""

    code = "bad_upstream_response"
    kind = ErrorKind.BAD_UPSTREAM
    title = "A dependency answered with an invalid response"


class Unauthenticated(CarbonRewardsError):
    """No valid credentials: a missing, malformed, expired or forged token, or a wrong secret."""

    code = "unauthenticated"
    kind = ErrorKind.UNAUTHENTICATED
    title = "Authentication required"


class Forbidden(CarbonRewardsError):
    """Authenticated, but this caller's role may not use this route."""

    code = "forbidden"
    kind = ErrorKind.FORBIDDEN
    title = "Not allowed for this caller"


class RateLimited(CarbonRewardsError):
    code = "rate_limited"
    kind = ErrorKind.RATE_LIMITED
    title = "Too many requests"

    def __init__(self, detail: str, *, retry_after_s: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after_s)}, retry_after_s=retry_after_s)
