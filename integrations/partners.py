"""Calling partners back over HTTP: account verification for links, and fetching claimed records.

Every call is signed (``domain.signatures``) with the partner's secret and retried with exponential
backoff and jitter on network errors, timeouts, 429 and 5xx. Each partner is a bulkhead: it has its
own pool of connections (``PartnerLimits.connections``), so a slow partner uses up its own share and
never another's; a call that finds its partner's pool full fails at once (503, not counted against
the partner's circuit). Each read is bounded by a timeout and the whole call, retries included, by a
deadline, so a partner that sends a byte every few seconds cannot hold a request for minutes. A
per-partner circuit breaker, fed only by that partner's own failures, stops calling it after
consecutive failures and fails fast (503 with ``Retry-After``) until a cool-down has passed; then
one trial call decides whether it closes again. An answer that breaks the contract (not JSON, wrong
shape, larger or more deeply nested than the limits) is a 502 and is not retried.

Contract (partner side):
- ``GET {base}/accounts/{account_ref}/verify?code=…&request_id=…`` → ``{"account_ref": …, "verified": true|false}``;
  the first verification uses the code up, and a repeat with the same ``request_id`` (a retry) is answered alike.
- ``GET {base}/records/{external_id}`` → the record as pushed, or 404 when the partner has none.
"""

from __future__ import annotations

import asyncio
import json
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
    #: Why, for the call metrics: ``unavailable``, ``timeout``, ``busy`` or ``circuit_open``.
    outcome = "unavailable"


class PartnerTimedOut(PartnerUnavailable):
    outcome = "timeout"


class PartnerBusy(PartnerUnavailable):
    outcome = "busy"


class CircuitOpen(PartnerUnavailable):
    outcome = "circuit_open"


class PartnerBadResponse(BadUpstreamResponse):
    code = "partner_bad_response"
    title = "The partner's system answered with an invalid response"


@dataclass(frozen=True)
class PartnerEndpoint:
    partner_id: UUID
    base_url: str
    secret: str


@dataclass(frozen=True)
class PartnerLimits:
    """Bounds of calls to one partner."""

    #: Connect, read and write timeout of one attempt.
    timeout_s: float = 3.0
    #: The whole call, every attempt and backoff included.
    deadline_s: float = 10.0
    #: Connections to one partner at once (its bulkhead); more calls wait up to ``pool_wait_s``.
    connections: int = 16
    pool_wait_s: float = 1.0
    max_response_bytes: int = 1_000_000
    max_response_depth: int = 32


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    backoff_s: float = 0.1
    breaker_threshold: int = 5
    breaker_cooldown_s: float = 30.0


#: Told of each call to a partner: its id, the outcome (``ok``, ``not_found``, ``bad_response``,
#: ``unavailable``, ``timeout``, ``busy``, ``circuit_open``), its duration (s) and the circuit's state after it.
CallObserver = Callable[[UUID, str, float, str], None]


class PartnerGateway:
    """Signed, retried, circuit-broken, bulkheaded calls to partners (one instance per process, shared;
    ``aclose`` it at shutdown)."""

    def __init__(
        self,
        policy: RetryPolicy,
        limits: PartnerLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
        observe: CallObserver | None = None,
    ) -> None:
        self._policy = policy
        self._observe = observe
        self._limits = limits or PartnerLimits()
        self._clock = clock
        self._breakers: dict[UUID, Circuit] = {}
        self._clients: dict[UUID, httpx.AsyncClient] = {}

    def _client(self, partner_id: UUID) -> httpx.AsyncClient:
        """The partner's own connection pool (its bulkhead)."""
        client = self._clients.get(partner_id)
        if client is None:
            limits = self._limits
            client = self._clients[partner_id] = httpx.AsyncClient(
                timeout=httpx.Timeout(limits.timeout_s, pool=limits.pool_wait_s),
                limits=httpx.Limits(max_connections=limits.connections, max_keepalive_connections=limits.connections),
                follow_redirects=False,
            )
        return client

    def circuit_state(self, partner_id: UUID) -> str:
        """``open`` while calls to the partner are refused, else ``closed`` (for operators and tests)."""
        breaker = self._breakers.get(partner_id)
        return "open" if breaker is not None and breaker.paused() else "closed"

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()

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
        if self._observe is None:
            return await self._call(partner, path, params)
        started, outcome = time.perf_counter(), "unavailable"
        try:
            body = await self._call(partner, path, params)
            outcome = "ok" if body is not None else "not_found"
            return body
        except PartnerBadResponse:
            outcome = "bad_response"
            raise
        except PartnerUnavailable as exc:
            outcome = exc.outcome
            raise
        finally:
            self._observe(
                partner.partner_id, outcome, time.perf_counter() - started, self.circuit_state(partner.partner_id)
            )

    async def _call(self, partner: PartnerEndpoint, path: str, params: dict[str, str] | None) -> Any:
        breaker = self._breakers.get(partner.partner_id)
        if breaker is None:
            breaker = self._breakers[partner.partner_id] = Circuit(
                self._policy.breaker_threshold, self._policy.breaker_cooldown_s, self._clock
            )
        wait = breaker.refusal()
        if wait is not None:
            raise CircuitOpen(
                "calls to this partner are paused after repeated failures",
                headers={"Retry-After": str(max(1, int(wait) + 1))},
                circuit="open",
            )
        try:
            async with asyncio.timeout(self._limits.deadline_s):
                return await self._attempts(partner, breaker, path, params)
        except TimeoutError:
            breaker.failed()
            raise PartnerTimedOut(
                f"the partner's system did not answer within {self._limits.deadline_s:g} s",
                headers={"Retry-After": "5"},
            ) from None

    async def _attempts(
        self, partner: PartnerEndpoint, breaker: Circuit, path: str, params: dict[str, str] | None
    ) -> Any:
        http = self._client(partner.partner_id)
        last_error = "no attempt made"
        for attempt in range(self._policy.attempts):
            if attempt:
                await asyncio.sleep(backoff_s(attempt, self._policy.backoff_s))
            request = http.build_request("GET", partner.base_url.rstrip("/") + path, params=params)
            target = request.url.raw_path.decode()
            request.headers[SIGNATURE_HEADER] = sign(partner.secret, int(time.time()), "GET", target)
            try:
                response = await http.send(request, stream=True)
            except httpx.PoolTimeout:
                # This partner's own share of connections is in use: busy, not failing; not retried.
                raise PartnerBusy(
                    "too many calls to this partner are in flight; retry shortly", headers={"Retry-After": "1"}
                ) from None
            except httpx.TimeoutException:
                last_error = "timed out"
                continue
            except httpx.HTTPError as exc:
                last_error = f"could not be reached ({type(exc).__name__})"
                continue
            try:
                if response.status_code == 429 or response.status_code >= 500:
                    last_error = f"answered {response.status_code}"
                    continue
                if response.status_code == 404:
                    breaker.succeeded()
                    return None
                if not response.is_success:
                    breaker.succeeded()
                    raise PartnerBadResponse(f"the partner answered {response.status_code} to {path}")
                try:
                    body = await self._read(response)
                except httpx.TimeoutException:
                    last_error = "timed out"
                    continue
                except httpx.HTTPError as exc:
                    last_error = f"broke off its answer ({type(exc).__name__})"
                    continue
                breaker.succeeded()
                return self._decode(body)
            finally:
                await response.aclose()
        breaker.failed()
        raise PartnerUnavailable(
            f"the partner's system {last_error} after {self._policy.attempts} attempts",
            headers={"Retry-After": "5"},
        )

    async def _read(self, response: httpx.Response) -> bytes:
        """The answer's body, refused as soon as it passes the size limit (never held whole)."""
        limit = self._limits.max_response_bytes
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise PartnerBadResponse(f"the partner's answer is larger than {limit} bytes")
        chunks, size = [], 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > limit:
                raise PartnerBadResponse(f"the partner's answer is larger than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def _decode(self, body: bytes) -> Any:
        try:
            document = json.loads(body)
        except RecursionError:
            document = None
            too_deep = True
        except ValueError:
            raise PartnerBadResponse("the partner's answer is not JSON") from None
        else:
            too_deep = json_depth(document) > self._limits.max_response_depth
        if too_deep:
            raise PartnerBadResponse(
                f"the partner's answer is nested more than {self._limits.max_response_depth} levels deep"
            )
        return document


def json_depth(document: Any) -> int:
    """How deeply a decoded JSON document nests (a scalar is 0), without recursion."""
    deepest, stack = 0, [(document, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            depth += 1
            deepest = max(deepest, depth)
            stack.extend((child, depth) for child in (value.values() if isinstance(value, dict) else value))
    return deepest
