"""Where a request came from: the client address and user agent that rate limits, session lists and
the audit log record, read once per request by the ``request_meta`` dependency."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from litestar import Request

from api.client_address import Network, client_address


@dataclass(frozen=True)
class RequestMeta:
    client_ip: str | None
    user_agent: str | None


def request_meta_provider(proxies: Sequence[Network]) -> Callable[[Request[Any, Any, Any]], RequestMeta]:
    """The ``request_meta`` dependency, believing ``X-Forwarded-For`` only from ``proxies``."""

    def provide_request_meta(request: Request[Any, Any, Any]) -> RequestMeta:
        return RequestMeta(
            client_ip=client_address(
                request.client.host if request.client else None, request.headers.getall("x-forwarded-for", []), proxies
            ),
            user_agent=request.headers.get("user-agent"),
        )

    return provide_request_meta
