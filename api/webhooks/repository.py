"""The SQL of the webhooks feature: endpoints, the dispatcher's claims and outcomes, the operators' view.

The dispatcher claims due deliveries with ``FOR UPDATE SKIP LOCKED`` and pushes their next attempt
a lease ahead in the same statement: dispatchers in several workers never take the same delivery,
and a delivery whose dispatcher died is taken again once the lease has run out (at least once).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from api.webhooks.models import OutboxEvent, WebhookDelivery, WebhookEndpoint

_CLAIM = """
    WITH due AS (
        SELECT id FROM webhook_deliveries
        WHERE status = 'pending' AND next_attempt_at <= now() AND endpoint_id <> ALL($2::uuid[])
        ORDER BY next_attempt_at
        LIMIT $1::int
        FOR UPDATE SKIP LOCKED
    ), claimed AS (
        UPDATE webhook_deliveries AS d
        SET attempts = d.attempts + 1, last_attempt_at = now(), next_attempt_at = now() + make_interval(secs => $3::float8)
        FROM due WHERE d.id = due.id
        RETURNING d.id, d.event_id, d.endpoint_id, d.attempts
    )
    SELECT c.id, c.attempts, c.endpoint_id, e.id AS event_id, e.type, e.payload::text AS payload, e.created_at,
           w.url, w.secret_sealed, w.removed_at IS NOT NULL AS removed
    FROM claimed AS c
    JOIN outbox_events AS e ON e.id = c.event_id
    JOIN webhook_endpoints AS w ON w.id = c.endpoint_id
    ORDER BY c.endpoint_id, e.created_at, e.id
"""
_SETTLE = """
    UPDATE webhook_deliveries AS d SET
        status = u.status,
        next_attempt_at = u.next_attempt_at,
        attempts = d.attempts - u.not_attempted,
        last_status_code = CASE WHEN u.not_attempted = 1 THEN d.last_status_code ELSE u.status_code END,
        last_error = CASE WHEN u.not_attempted = 1 THEN d.last_error ELSE u.error END,
        delivered_at = CASE WHEN u.status = 'delivered' THEN now() ELSE d.delivered_at END
    FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::int[], $5::text[], $6::int[])
        AS u(id, status, next_attempt_at, status_code, error, not_attempted)
    WHERE d.id = u.id
"""


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery this dispatcher holds until its lease runs out: what to send, and where."""

    id: uuid.UUID
    attempts: int
    endpoint_id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    payload: str
    event_created_at: datetime
    url: str
    secret_sealed: bytes
    endpoint_removed: bool


@dataclass(frozen=True, slots=True)
class Settled:
    """How a claimed delivery ends this round: ``not_attempted`` gives its attempt back (a paused endpoint)."""

    id: uuid.UUID
    status: str
    next_attempt_at: datetime
    status_code: int | None = None
    error: str | None = None
    not_attempted: bool = False


async def claim(conn: asyncpg.Connection, limit: int, paused: Sequence[uuid.UUID], lease_s: float) -> list[Claimed]:
    rows = await conn.fetch(_CLAIM, limit, list(paused), lease_s)
    return [
        Claimed(
            id=r["id"],
            attempts=r["attempts"],
            endpoint_id=r["endpoint_id"],
            event_id=r["event_id"],
            event_type=r["type"],
            payload=r["payload"],
            event_created_at=r["created_at"],
            url=r["url"],
            secret_sealed=bytes(r["secret_sealed"]),
            endpoint_removed=r["removed"],
        )
        for r in rows
    ]


async def settle(conn: asyncpg.Connection, outcomes: Sequence[Settled]) -> None:
    if not outcomes:
        return
    await conn.execute(
        _SETTLE,
        [o.id for o in outcomes],
        [o.status for o in outcomes],
        [o.next_attempt_at for o in outcomes],
        [o.status_code for o in outcomes],
        [(o.error or "")[:500] or None for o in outcomes],
        [int(o.not_attempted) for o in outcomes],
    )


async def active_endpoint(
    session: AsyncSession, owner_role: str, owner_id: uuid.UUID, *, for_update: bool = False
) -> WebhookEndpoint | None:
    query = select(WebhookEndpoint).where(
        WebhookEndpoint.owner_role == owner_role,
        WebhookEndpoint.owner_id == owner_id,
        WebhookEndpoint.removed_at.is_(None),  # type: ignore[union-attr]
    )
    if for_update:
        query = query.with_for_update()
    return (await session.scalars(query)).first()


async def deliveries(
    session: AsyncSession, status: str | None, after: tuple[datetime, uuid.UUID] | None, limit: int
) -> Sequence[tuple[WebhookDelivery, OutboxEvent, WebhookEndpoint]]:
    """Deliveries, newest first, with their event and endpoint; only those in ``status`` when given."""
    query = (
        select(WebhookDelivery, OutboxEvent, WebhookEndpoint)
        .join(OutboxEvent, OutboxEvent.id == WebhookDelivery.event_id)  # type: ignore[arg-type]
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)  # type: ignore[arg-type]
    )
    if status is not None:
        query = query.where(WebhookDelivery.status == status)
    if after is not None:
        query = query.where(tuple_(WebhookDelivery.created_at, WebhookDelivery.id) < tuple_(*after))
    query = query.order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc()).limit(limit)  # type: ignore[attr-defined]
    return [tuple(row) for row in (await session.execute(query)).all()]  # type: ignore[misc]


async def delivery_for_update(session: AsyncSession, delivery_id: uuid.UUID) -> WebhookDelivery | None:
    return (
        await session.scalars(select(WebhookDelivery).where(WebhookDelivery.id == delivery_id).with_for_update())
    ).first()


@dataclass(frozen=True, slots=True)
class DeliveryBacklog:
    """The outbox as operators watch it: deliveries waiting, how long the oldest has waited, and the dead."""

    pending: int
    oldest_pending_age_s: float
    dead: int


async def delivery_backlog(conn: asyncpg.Connection) -> DeliveryBacklog:
    """On the partial index of pending deliveries and the status index: cheap while the backlog is small."""
    row = await conn.fetchrow(
        """
        SELECT (SELECT count(*) FROM webhook_deliveries WHERE status = 'pending') AS pending,
               (SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8
                  FROM webhook_deliveries WHERE status = 'pending') AS oldest,
               (SELECT count(*) FROM webhook_deliveries WHERE status = 'dead') AS dead
        """
    )
    return DeliveryBacklog(row["pending"], row["oldest"], row["dead"])
