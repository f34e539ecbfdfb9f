"""Every error leaves the service as ``application/problem+json`` (RFC 9457), mapped here and only here.

The ``type`` is a stable URN built from the machine-readable ``code`` (also given as its own member),
so clients can branch on it without parsing prose. Nothing becomes a bare 500: unexpected errors are
logged with their traceback and answered with the ``internal_error`` problem.
"""

from __future__ import annotations

import functools
import logging
import re
import uuid
from typing import Any

import sqlalchemy.exc
from litestar import Request, Response
from litestar.exceptions import HTTPException, NotFoundException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from api.observability import current_request_id
from api.database import DatabaseBusy, DatabaseUnavailable
from domain.errors import CarbonRewardsError, ErrorKind, InvalidInput
from ledger import current_outage, database_unreachable

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"

STATUS_BY_KIND: dict[ErrorKind, int] = {
    ErrorKind.MALFORMED: 400,
    ErrorKind.INVALID: 422,
    ErrorKind.UNAUTHENTICATED: 401,
    ErrorKind.FORBIDDEN: 403,
    ErrorKind.RATE_LIMITED: 429,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.CONFLICT: 409,
    ErrorKind.UNAVAILABLE: 503,
    ErrorKind.BAD_UPSTREAM: 502,
    ErrorKind.INTERNAL: 500,
}

_CODE_BY_STATUS = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "too_many_requests",
    503: "service_unavailable",
}


def problem_type(code: str) -> str:
    return f"urn:carbon-rewards:problem:{code}"


def problem(
    request: Request[Any, Any, Any], *, status: int, code: str, title: str, detail: str, **extra: Any
) -> Response[dict[str, Any]]:
    body = {
        "type": problem_type(code),
        "code": code,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        "request_id": current_request_id(),
        **extra,
    }
    return Response(content=body, status_code=status, media_type=PROBLEM_JSON)


def _domain_error(request: Request[Any, Any, Any], exc: CarbonRewardsError) -> Response[dict[str, Any]]:
    status = STATUS_BY_KIND[exc.kind]
    if status >= 500:
        log.error("%s: %s", exc.code, exc.detail)
    response = problem(request, status=status, code=exc.code, title=exc.title, detail=exc.detail, **exc.extra)
    response.headers.update(exc.headers)
    return response


_PARAMETER = re.compile(r"\{(\w+):(\w+)\}")


@functools.lru_cache(maxsize=8)
def _uuid_routes(paths: tuple[str, ...]) -> list[tuple[re.Pattern[str], list[str]]]:
    """Each route template with UUID parameters, as a pattern that takes any segment in their place."""
    found = []
    for path in paths:
        names = [name for name, kind in _PARAMETER.findall(path) if kind == "uuid"]
        if not names:
            continue
        pattern, last = "", 0
        for parameter in _PARAMETER.finditer(path):
            pattern += re.escape(path[last : parameter.start()]) + f"(?P<{parameter[1]}>[^/]+)"
            last = parameter.end()
        pattern += re.escape(path[last:])
        found.append((re.compile(pattern), names))
    return found


def _malformed_uuid(request: Request[Any, Any, Any]) -> str | None:
    """The path parameter that is not a UUID, when the path fits a route but for that (a 422, not a 404)."""
    paths = tuple(route.path for route in request.app.routes)
    for pattern, names in _uuid_routes(paths):
        match = pattern.fullmatch(request.url.path)
        if match is None:
            continue
        for name in names:
            try:
                uuid.UUID(match[name])
            except ValueError:
                return name
    return None


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    status = exc.status_code
    code = _CODE_BY_STATUS.get(status, "http_error")
    extra: dict[str, Any] = {}
    if isinstance(exc, ValidationException):
        status, code = 422, "invalid_input"
        extra["errors"] = exc.extra if isinstance(exc.extra, list) else [exc.extra] if exc.extra else []
    elif isinstance(exc, NotFoundException) and (parameter := _malformed_uuid(request)) is not None:
        status, code = 422, "invalid_input"
        extra["errors"] = [{"key": parameter, "message": f"{parameter} must be a UUID", "source": "path"}]
        exc = ValidationException(detail=f"{parameter} in the path is not a UUID")
    elif isinstance(exc, NotFoundException):
        code = "not_found"
    headers = exc.headers or {}
    response = problem(
        request, status=status, code=code, title=code.replace("_", " ").capitalize(), detail=exc.detail, **extra
    )
    response.headers.update(headers)
    return response


#: SQLSTATEs of PostgreSQL refusing text a client sent: a NUL character (22021) or a Unicode escape it
#: cannot hold in JSONB (22P05).
_UNSTORABLE_TEXT_STATES = frozenset({"22021", "22P05"})


def _unstorable_text(exc: BaseException) -> bool:
    """Whether ``exc``, or an error it wraps, says the client's text cannot be stored (or encoded as UTF-8)."""
    current: BaseException | None = exc
    for _ in range(8):  # SQLAlchemy wraps the driver's error, which may wrap the codec's
        if current is None:
            return False
        if getattr(current, "sqlstate", None) in _UNSTORABLE_TEXT_STATES:
            return True
        if isinstance(current, UnicodeEncodeError) and "surrogates" in current.reason:
            return True
        current = getattr(current, "orig", None) or current.__cause__
    return False


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    if isinstance(exc, sqlalchemy.exc.TimeoutError):  # the pool had no free connection in time
        return _domain_error(
            request,
            DatabaseBusy(
                "every database connection stayed in use while the request waited; retry shortly",
                headers={"Retry-After": "1"},
            ),
        )
    if isinstance(exc, RecursionError) and ("deserializing" in str(exc) or "decoding a JSON" in str(exc)):
        # A body nested past the JSON decoder's recursion limit: malformed input, refused like bad JSON.
        return problem(
            request,
            status=400,
            code="bad_request",
            title="Bad request",
            detail="the body is nested too deeply to be read as JSON",
        )
    if database_unreachable(exc):
        outage = getattr(request.app.state, "outage", None) or current_outage()
        outage.failed(exc, "requests")  # logged once per outage, without a traceback
        unavailable = DatabaseUnavailable("the database cannot be reached at the moment; retry shortly")
        response = problem(
            request, status=503, code=unavailable.code, title=unavailable.title, detail=unavailable.detail
        )
        response.headers["Retry-After"] = "5"
        return response
    if _unstorable_text(exc):
        # Input that slipped past validation into a query, not a fault of the service: the request's
        # transaction is rolled back like any failed request's, and the client is told what to fix.
        return _domain_error(
            request, InvalidInput("the request holds text that cannot be stored: a NUL character or a lone surrogate")
        )
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem(
        request,
        status=HTTP_500_INTERNAL_SERVER_ERROR,
        code="internal_error",
        title="Internal error",
        detail="The request failed unexpectedly and was logged; retry it with the same idempotency key.",
    )


EXCEPTION_HANDLERS = {
    CarbonRewardsError: _domain_error,
    HTTPException: _http_error,
    Exception: _unexpected,
}

__all__ = ["EXCEPTION_HANDLERS", "PROBLEM_JSON", "problem", "problem_type"]
