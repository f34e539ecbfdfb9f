"""The dispatcher: delivers committed events from the outbox, at least once, to each endpoint.

Every worker runs one. A round claims up to ``batch`` due deliveries (short transaction; see
``repository.claim``), sends them with no database connection held (one endpoint's in order,
different endpoints concurrently), and settles them in one more short transaction:

* a 2xx answer: ``delivered``;
* anything else: tried again after ``backoff_s × 2^(attempts−1)`` (±50 % jitter, at most
  ``max_backoff_s``), or ``dead`` once ``max_attempts`` attempts have failed;
* an endpoint that failed ``breaker_threshold`` times in a row is paused for ``breaker_cooldown_s``
  in this worker (its circuit is open): its remaining deliveries of the round are given back without
  counting an attempt, and it is not claimed for until one trial may go.

A dispatcher that stops mid-round (a restart) loses nothing: its claims run out after ``lease_s``
and are delivered again, which is what "at least once" allows. A receiver drops repeats by
``X-Carbon-Event-Id``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.database import raw_connection
from api.keys import ServerSecret
from api.webhooks import repository
from api.webhooks.repository import Claimed, Settled
from integrations.backoff import backoff_s
from integrations.circuit import Circuit
from integrations.webhooks import WebhookSender
from ledger import PeriodicTask

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeliveryPolicy:
    max_attempts: int = 12
    backoff_s: float = 1.0
    max_backoff_s: float = 3600.0
    breaker_threshold: int = 5
    breaker_cooldown_s: float = 30.0
    batch: int = 100
    #: How long a claimed delivery stays with its dispatcher: longer than a round's sending takes.
    lease_s: float = 60.0

    def retry_delay(self, attempts: int) -> timedelta:
        return timedelta(seconds=backoff_s(attempts, self.backoff_s, self.max_backoff_s))


class Dispatcher:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        sender: WebhookSender,
        secret: ServerSecret,
        policy: DeliveryPolicy,
        poll_interval_s: float,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.sender = sender
        self.secret = secret
        self.policy = policy
        self._circuits: dict[uuid.UUID, Circuit] = {}
        self.task = PeriodicTask("webhook-dispatcher", self.deliver_due, poll_interval_s)

    def start(self) -> None:
        self.task.start()

    async def stop(self) -> None:
        await self.task.stop()

    def _circuit(self, endpoint_id: uuid.UUID) -> Circuit:
        circuit = self._circuits.get(endpoint_id)
        if circuit is None:
            policy = self.policy
            circuit = self._circuits[endpoint_id] = Circuit(policy.breaker_threshold, policy.breaker_cooldown_s)
        return circuit

    def _paused(self) -> list[uuid.UUID]:
        """Endpoints whose circuit is open and admits no trial yet (not claimed for this round)."""
        return [e for e, c in self._circuits.items() if c.paused()]

    async def deliver_due(self) -> bool:
        """One round; True when it claimed a full batch (more may be due at once)."""
        async with self.sessionmaker() as session, session.begin():
            claims = await repository.claim(
                await raw_connection(session), self.policy.batch, self._paused(), self.policy.lease_s
            )
        if not claims:
            return False
        by_endpoint: defaultdict[uuid.UUID, list[Claimed]] = defaultdict(list)
        for claimed in claims:
            by_endpoint[claimed.endpoint_id].append(claimed)
        settled = await asyncio.gather(*(self._deliver_in_order(group) for group in by_endpoint.values()))
        async with self.sessionmaker() as session, session.begin():
            await repository.settle(await raw_connection(session), [s for group in settled for s in group])
        return len(claims) == self.policy.batch

    async def _deliver_in_order(self, claims: Sequence[Claimed]) -> list[Settled]:
        circuit = self._circuit(claims[0].endpoint_id)
        outcomes: list[Settled] = []
        for claimed in claims:
            now = datetime.now(UTC)
            if claimed.endpoint_removed:
                outcomes.append(Settled(claimed.id, "dead", now, error="the endpoint was removed"))
                continue
            wait = circuit.refusal()
            if wait is not None:  # the endpoint failed too often: give the attempt back, try after the pause
                outcomes.append(Settled(claimed.id, "pending", now + timedelta(seconds=wait), not_attempted=True))
                continue
            attempt = await self.sender.send(
                claimed.url,
                self.secret.unseal(claimed.secret_sealed),
                claimed.event_id,
                claimed.event_type,
                _body(claimed),
            )
            if attempt.delivered:
                circuit.succeeded()
                outcomes.append(Settled(claimed.id, "delivered", now, attempt.status_code))
                continue
            circuit.failed()
            if claimed.attempts >= self.policy.max_attempts:
                log.warning("webhook %s to %s is dead after %d attempts", claimed.id, claimed.url, claimed.attempts)
                outcomes.append(Settled(claimed.id, "dead", now, attempt.status_code, attempt.error))
            else:
                next_at = now + self.policy.retry_delay(claimed.attempts)
                outcomes.append(Settled(claimed.id, "pending", next_at, attempt.status_code, attempt.error))
        return outcomes


def _body(claimed: Claimed) -> bytes:
    """The event as sent: its id, type and time around the payload written with the change."""
    return msgspec.json.encode(
        {
            "id": claimed.event_id,
            "type": claimed.event_type,
            "created_at": claimed.event_created_at,
            "data": msgspec.Raw(claimed.payload.encode()),
        }
    )
