"""The submitter: hands built batches to the carbon exchange and records its receipt.

Every worker runs one when ``CARBON_EXCHANGE_URL`` is set. A round claims due ``built`` batches
(short transaction, ``SKIP LOCKED``, a lease ahead), submits each with no database connection held,
and records the outcome in one more short transaction:

* a receipt: ``submitted``, with the receipt id;
* a failure worth retrying (timeout, connection, 408, 429, 5xx): still ``built``, tried again after
  ``backoff_s × 2^(attempts−1)`` (±50 % jitter, at most ``max_backoff_s``), for as long as it takes;
* any other answer: ``rejected``, with the exchange's answer, for an operator to look at.

The batch id is the submission's ``Idempotency-Key``: a batch submitted again after a lost answer or
a crash between submitting and recording gets the exchange's first receipt, never a second entry.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.database import raw_connection
from api.exchange import repository
from api.exchange.models import ExchangeBatch
from api.settings import Settings
from integrations.backoff import backoff_s
from integrations.exchange import ExchangeClient
from ledger import PeriodicTask

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SubmitPolicy:
    backoff_s: float = 5.0
    max_backoff_s: float = 3600.0
    batch: int = 10
    #: How long a claimed batch stays with its submitter: longer than one submission takes.
    lease_s: float = 90.0

    def retry_delay(self, attempts: int) -> timedelta:
        return timedelta(seconds=backoff_s(attempts, self.backoff_s, self.max_backoff_s))


class Submitter:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        client: ExchangeClient,
        policy: SubmitPolicy,
        poll_interval_s: float,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.client = client
        self.policy = policy
        self.task = PeriodicTask("exchange-submitter", self.submit_due, poll_interval_s)

    def start(self) -> None:
        self.task.start()

    async def stop(self) -> None:
        await self.task.stop()

    async def submit_due(self) -> bool:
        """One round; True when it claimed a full batch of batches (more may be due at once)."""
        async with self.sessionmaker() as session, session.begin():
            due = await repository.claim_due(await raw_connection(session), self.policy.batch, self.policy.lease_s)
        for batch_id in due:
            await self._submit(batch_id)
        return len(due) == self.policy.batch

    async def _submit(self, batch_id: uuid.UUID) -> None:
        async with self.sessionmaker() as session:
            batch = await session.get(ExchangeBatch, batch_id)
        assert batch is not None
        result = await self.client.submit(str(batch_id), repository.summary_of(batch))
        if result.receipt_id is not None:
            status, next_at = "submitted", None
            log.info("exchange batch %s submitted: receipt %s", batch_id, result.receipt_id)
        elif result.retry:
            status, next_at = "built", datetime.now(UTC) + self.policy.retry_delay(batch.attempts)
            log.warning("exchange batch %s not submitted (attempt %d): %s", batch_id, batch.attempts, result.error)
        else:
            status, next_at = "rejected", None
            log.error("exchange batch %s rejected: %s", batch_id, result.error)
        async with self.sessionmaker() as session, session.begin():
            await repository.record_submission(
                await raw_connection(session),
                batch_id,
                status=status,
                receipt_id=result.receipt_id,
                error=result.error,
                next_attempt_at=next_at,
            )


def open_submitter(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], http: httpx.AsyncClient
) -> Submitter | None:
    """This worker's submitter, or None when no exchange is configured (batches then stay ``built``)."""
    if not settings.exchange_url:
        return None
    token = settings.exchange_token.get_secret_value() if settings.exchange_token else ""
    policy = SubmitPolicy(
        backoff_s=settings.exchange_backoff_s,
        max_backoff_s=settings.exchange_max_backoff_s,
        lease_s=2 * settings.exchange_timeout_s + 30,
    )
    return Submitter(
        sessionmaker, ExchangeClient(http, settings.exchange_url, token), policy, settings.exchange_poll_interval_s
    )
