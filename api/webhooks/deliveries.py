"""What operators see of webhook deliveries, and sending a dead (or any) delivery again."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from api.audit_log import Actor, record
from api.pagination import Page, decode_cursor, page_of
from api.request_meta import RequestMeta
from api.webhooks import repository
from api.webhooks.errors import DeliveryNotFound
from api.webhooks.models import OutboxEvent, WebhookDelivery, WebhookEndpoint

Row = tuple[WebhookDelivery, OutboxEvent, WebhookEndpoint]


async def list_deliveries(session: AsyncSession, status: str | None, cursor: str | None, limit: int) -> Page[Row]:
    rows: Sequence[Row] = await repository.deliveries(session, status, decode_cursor(cursor), limit + 1)
    return page_of(rows, limit, lambda row: (row[0].created_at, row[0].id))


async def redeliver(session: AsyncSession, actor: Actor, delivery_id: uuid.UUID, meta: RequestMeta) -> WebhookDelivery:
    """Make a delivery due now, with its attempts counted afresh (audited)."""
    delivery = await repository.delivery_for_update(session, delivery_id)
    if delivery is None:
        raise DeliveryNotFound(f"no webhook delivery {delivery_id}")
    previous = delivery.status
    delivery.status, delivery.attempts, delivery.next_attempt_at = "pending", 0, datetime.now(UTC)
    await session.flush()
    await record(
        session,
        actor,
        "webhook_delivery.redeliver",
        "webhook_delivery",
        str(delivery.id),
        {"previous_status": previous, "event_id": str(delivery.event_id)},
        meta,
    )
    return delivery
