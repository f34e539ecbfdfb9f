"""Sending one webhook: an event, signed, POSTed to a merchant's or partner's endpoint.

The body is the event as JSON; ``X-Carbon-Signature: t=…,v1=…`` signs ``"<t>.POST.<path>." + body``
with the endpoint's secret (the scheme partners already use towards us, ``domain.signatures``), and
``X-Carbon-Event-Id`` / ``X-Carbon-Event-Type`` name the event, so that a receiver can drop a repeat:
delivery is at least once. Any 2xx answer delivers the event; anything else, a timeout or a
connection failure is a failed attempt for the dispatcher to retry. Redirects are not followed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from uuid import UUID

import httpx

from domain.signatures import SIGNATURE_HEADER, sign

EVENT_ID_HEADER = "X-Carbon-Event-Id"
EVENT_TYPE_HEADER = "X-Carbon-Event-Type"


@dataclass(frozen=True)
class Attempt:
    """How one delivery attempt ended."""

    delivered: bool
    status_code: int | None = None
    error: str | None = None


class WebhookSender:
    """Signed POSTs of events, on one shared HTTP client (bounded by its timeout)."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def send(self, url: str, secret: str, event_id: UUID, event_type: str, body: bytes) -> Attempt:
        request = self._http.build_request("POST", url, content=body)
        request.headers["Content-Type"] = "application/json"
        request.headers[EVENT_ID_HEADER] = str(event_id)
        request.headers[EVENT_TYPE_HEADER] = event_type
        request.headers[SIGNATURE_HEADER] = sign(secret, int(time.time()), "POST", request.url.raw_path.decode(), body)
        try:
            response = await self._http.send(request)
        except httpx.TimeoutException:
            return Attempt(False, error="timed out")
        except httpx.HTTPError as exc:
            return Attempt(False, error=f"could not be reached ({type(exc).__name__})")
        if response.is_success:
            return Attempt(True, response.status_code)
        return Attempt(False, response.status_code, f"answered {response.status_code}")
