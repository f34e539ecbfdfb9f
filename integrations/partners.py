"""Calling partners back over HTTP: account verification for links, and fetching claimed records.

Every call is signed (``domain.signatures``) with the partner's secret, bounded by a timeout, and
retried with exponential backoff and jitter on network errors, timeouts, 429 and 5xx. A per-partner
circuit breaker stops calling a partner after consecutive failures and fails fast (503 with
``Retry-After``) until a cool-down has passed; then one trial call decides whether it closes again.
An answer that breaks the contract (not JSON, wrong shape) is a 502 and is not retried.

Contract (partner side):
- ``GET {base}/accounts/{account_ref}/verify?code=…&request_id=…`` → ``{"account_ref": …, "verified": true|false}``;
  the first verification uses the code up, and a repeat with the same ``request_id`` (a retry) is answered alike.
- ``GET {base}/records/{external_id}`` → the record as pushed, or 404 when the partner has none.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote
from uuid import UUID

import httpx

from domain.errors import BadUpstreamResponse, ServiceUnavailable
from domain.signatures import SIGNATURE_HEADER, sign
from integrations.backoff import backoff_s
from integrations.circuit import Circuit


class PartnerUnavailable(ServiceUnavailable):
    code = "partner_unavailable"
    title = "The partner's system is unavailable; try again shortly"


class PartnerBadResponse(BadUpstreamResponse):
    code = "partner_bad_response"
    title = "The partner's system answered with an invalid response"


@dataclass(frozen=True)
class PartnerEndpoint:
    partner_id: UUID
    base_url: str
    secret: str


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    backoff_s: float = 0.1
    breaker_threshold: int = 5
    breaker_cooldown_s: float = 30.0


class PartnerGateway:
    """Signed, retried, circuit-broken calls to partners (one instance per process, shared)."""

    def __init__(
        self, http: httpx.AsyncClient, policy: RetryPolicy, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._http = http
        self._policy = policy
        self._clock = clock
        self._breakers: dict[UUID, Circuit] = {}

    async def verify_account(self, partner: PartnerEndpoint, account_ref: str, code: str, request_id: UUID) -> bool:
        """Whether the partner confirms that ``code`` was shown to the holder of ``account_ref``.

        Verifying uses the code up, so a retry must not look like a second use: every attempt of one
        verification carries the same ``request_id``, and the partner answers a repeat as it did the first.
        """
        params = {"code": code, "request_id": str(request_id)}
        body = await self._get_json(partner, f"/accounts/{quote(account_ref, safe='')}/verify", params)
        if body is None or not isinstance(body, dict) or not isinstance(body.get("verified"), bool):
            raise PartnerBadResponse("the partner's verification answer lacks a boolean 'verified'")
        if body["verified"] and body.get("account_ref") != account_ref:
            raise PartnerBadResponse("the partner verified a different account than the one asked for")
        return bool(body["verified"])

    async def fetch_record(self, partner: PartnerEndpoint, external_id: str) -> dict[str, Any] | None:
        """The partner's record ``external_id``, or None when the partner has no such record."""
        body = await self._get_json(partner, f"/records/{quote(external_id, safe='')}", None)
        if body is None:
            return None
        if not isinstance(body, dict):
            raise PartnerBadResponse("the partner's record is not a JSON object")
        return body

    async def _get_json(self, partner: PartnerEndpoint, path: str, params: dict[str, str] | None) -> Any:
        """GET and decode JSON; None for 404. Retries transient failures; trips the breaker."""
        breaker = self._breakers.get(partner.partner_id)
        if breaker is None:
            breaker = self._breakers[partner.partner_id] = Circuit(
                self._policy.breaker_threshold, self._policy.breaker_cooldown_s, self._clock
            )
        wait = breaker.refusal()
        if wait is not None:
            raise PartnerUnavailable(
                "calls to this partner are paused after repeated failures",
                headers={"Retry-After": str(max(1, int(wait) + 1))},
                circuit="open",
            )
        last_error = "no attempt made"
        for attempt in range(self._policy.attempts):
            if attempt:
                await asyncio.sleep(backoff_s(attempt, self._policy.backoff_s))
            request = self._http.build_request("GET", partner.base_url.rstrip("/") + path, params=params)
            target = request.url.raw_path.decode()
            request.headers[SIGNATURE_HEADER] = sign(partner.secret, int(time.time()), "GET", target)
            try:
                response = await self._http.send(request)
            except httpx.TimeoutException:
                last_error = "timed out"
                continue
            except httpx.HTTPError as exc:
                last_error = f"could not be reached ({type(exc).__name__})"
                continue
            if response.status_code == 429 or response.status_code >= 500:
                last_error = f"answered {response.status_code}"
                continue
            breaker.succeeded()
            if response.status_code == 404:
                return None
            if not response.is_success:
                raise PartnerBadResponse(f"the partner answered {response.status_code} to {path}")
            try:
                return response.json()
            except ValueError:
                raise PartnerBadResponse("the partner's answer is not JSON") from None
        breaker.failed()
        raise PartnerUnavailable(
            f"the partner's system {last_error} after {self._policy.attempts} attempts",
            headers={"Retry-After": "5"},
        )
