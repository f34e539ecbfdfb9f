"""What operators read of exchange batches."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from api.exchange import repository
from api.exchange.errors import BatchNotFound
from api.exchange.models import ExchangeBatch
from api.pagination import Page, decode_cursor, page_of


async def list_batches(session: AsyncSession, cursor: str | None, limit: int) -> Page[ExchangeBatch]:
    rows = await repository.batches(session, decode_cursor(cursor), limit + 1)
    return page_of(rows, limit, lambda b: (b.created_at, b.id))


async def get_batch(session: AsyncSession, batch_id: uuid.UUID) -> ExchangeBatch:
    batch = await session.get(ExchangeBatch, batch_id)
    if batch is None:
        raise BatchNotFound(f"no exchange batch {batch_id}")
    return batch
