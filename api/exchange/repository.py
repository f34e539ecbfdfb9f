"""The SQL of the exchange feature. It owns the batch tables, and reads two of the actions feature's,
``actions`` (credited reductions) and ``action_reversals``, the one cross-feature read of the service:
a batch is built set-based, in one statement per table, however many actions it holds.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from api.exchange.models import ExchangeBatch

#: Advisory lock of "a batch is being built": batches are built one at a time.
_BATCHING_LOCK = 0x65786331  # "exc1"

_ADD_ITEMS = """
    INSERT INTO exchange_batch_items (action_id, batch_id, grams_co2e)
    SELECT a.id, $1::uuid, a.grams_co2e FROM actions AS a
    WHERE a.status = 'credited' AND a.decided_at <= $2::timestamptz AND a.grams_co2e > 0
      AND NOT EXISTS (SELECT FROM exchange_batch_items AS i WHERE i.action_id = a.id)
"""
#: Reads every reversal up to the cut-off (they are few: fraud found after the fact).
_ADD_ADJUSTMENTS = """
    INSERT INTO exchange_adjustments (action_id, batch_id, exported_in, grams_co2e)
    SELECT r.action_id, $1::uuid, i.batch_id, r.grams_co2e
    FROM action_reversals AS r JOIN exchange_batch_items AS i ON i.action_id = r.action_id
    WHERE r.reversed_at <= $2::timestamptz
      AND NOT EXISTS (SELECT FROM exchange_adjustments AS x WHERE x.action_id = r.action_id)
"""
_ITEM_TOTALS = """
    SELECT a.kind, a.methodology_id || ' v' || a.methodology_version AS methodology,
           count(*) AS count, sum(i.grams_co2e)::bigint AS grams
    FROM exchange_batch_items AS i
    CROSS JOIN LATERAL (SELECT * FROM actions WHERE id = i.action_id OFFSET 0) AS a
    WHERE i.batch_id = $1::uuid
    GROUP BY 1, 2
"""
#: What the evidence of a batch says of each reduction, in action-id order (each action looked up by key:
#: ``OFFSET 0`` keeps the planner from hashing the whole actions table).
EVIDENCE_REDUCTIONS = """
    SELECT i.action_id, i.grams_co2e, a.kind, a.partner_id, a.source, a.record::text AS record, a.category,
           a.quantity, a.methodology_id, a.methodology_version, a.factor
    FROM exchange_batch_items AS i
    CROSS JOIN LATERAL (SELECT * FROM actions WHERE id = i.action_id OFFSET 0) AS a
    WHERE i.batch_id = $1::uuid
    ORDER BY i.action_id
"""
EVIDENCE_METHODOLOGIES = """
    SELECT DISTINCT a.methodology_id, a.methodology_version
    FROM exchange_batch_items AS i
    CROSS JOIN LATERAL (SELECT * FROM actions WHERE id = i.action_id OFFSET 0) AS a
    WHERE i.batch_id = $1::uuid
    ORDER BY 1, 2
"""
EVIDENCE_ADJUSTMENTS = """
    SELECT action_id, exported_in, grams_co2e FROM exchange_adjustments WHERE batch_id = $1::uuid ORDER BY action_id
"""


async def lock_batching(conn: asyncpg.Connection) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock($1::int, 0)", _BATCHING_LOCK)


async def insert_batch(conn: asyncpg.Connection, batch_id: uuid.UUID, cutoff: datetime, created_by: str) -> None:
    """The batch's row, empty: its items refer to it; ``complete_batch`` writes its totals in the same transaction."""
    await conn.execute(
        """
        INSERT INTO exchange_batches (id, cutoff, status, actions, grams_co2e, adjustments, adjustment_g, net_g,
                                      by_kind, by_methodology, merkle_root, created_by)
        VALUES ($1, $2, 'built', 0, 0, 0, 0, 0, '{}', '{}', '', $3)
        """,
        batch_id,
        cutoff,
        created_by,
    )


async def complete_batch(conn: asyncpg.Connection, batch_id: uuid.UUID, totals: dict[str, Any]) -> None:
    await conn.execute(
        """
        UPDATE exchange_batches SET actions = $2, grams_co2e = $3, adjustments = $4, adjustment_g = $5, net_g = $6,
            by_kind = $7::jsonb, by_methodology = $8::jsonb, merkle_root = $9
        WHERE id = $1
        """,
        batch_id,
        totals["actions"],
        totals["grams_co2e"],
        totals["adjustments"],
        totals["adjustment_g"],
        totals["net_g"],
        json.dumps(totals["by_kind"]),
        json.dumps(totals["by_methodology"]),
        totals["merkle_root"],
    )


async def add_items(conn: asyncpg.Connection, batch_id: uuid.UUID, cutoff: datetime) -> None:
    """Every credited, not yet exported reduction decided up to the cut-off joins the batch."""
    await conn.execute(_ADD_ITEMS, batch_id, cutoff)


async def add_adjustments(conn: asyncpg.Connection, batch_id: uuid.UUID, cutoff: datetime) -> None:
    """Every reversal, up to the cut-off, of a reduction exported before and not yet adjusted joins the batch."""
    await conn.execute(_ADD_ADJUSTMENTS, batch_id, cutoff)


async def item_totals(conn: asyncpg.Connection, batch_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(_ITEM_TOTALS, batch_id)


async def adjustment_totals(conn: asyncpg.Connection, batch_id: uuid.UUID) -> tuple[int, int]:
    row = await conn.fetchrow(
        "SELECT count(*) AS count, coalesce(sum(grams_co2e), 0)::bigint AS grams FROM exchange_adjustments "
        "WHERE batch_id = $1",
        batch_id,
    )
    return row["count"], row["grams"]


async def item_ids(conn: asyncpg.Connection, batch_id: uuid.UUID) -> AsyncIterator[uuid.UUID]:
    """The batch's action ids in ascending order, through a cursor (the caller's transaction)."""
    async for row in conn.cursor(
        "SELECT action_id FROM exchange_batch_items WHERE batch_id = $1 ORDER BY action_id", batch_id, prefetch=5000
    ):
        yield row["action_id"]


async def claim_due(conn: asyncpg.Connection, limit: int, lease_s: float) -> list[uuid.UUID]:
    """Built batches due for submission, held a lease ahead (``SKIP LOCKED``: one submitter each)."""
    rows = await conn.fetch(
        """
        UPDATE exchange_batches AS b
        SET attempts = b.attempts + 1, next_attempt_at = now() + make_interval(secs => $2::float8)
        FROM (SELECT id FROM exchange_batches WHERE status = 'built' AND next_attempt_at <= now()
              ORDER BY next_attempt_at LIMIT $1::int FOR UPDATE SKIP LOCKED) AS due
        WHERE b.id = due.id
        RETURNING b.id
        """,
        limit,
        lease_s,
    )
    return [r["id"] for r in rows]


async def record_submission(
    conn: asyncpg.Connection,
    batch_id: uuid.UUID,
    *,
    status: str,
    receipt_id: str | None,
    error: str | None,
    next_attempt_at: datetime | None,
) -> None:
    await conn.execute(
        """
        UPDATE exchange_batches SET status = $2::text, receipt_id = coalesce($3::text, receipt_id),
            last_error = $4::text,
            submitted_at = CASE WHEN $2::text = 'submitted' THEN now() ELSE submitted_at END,
            next_attempt_at = coalesce($5::timestamptz, next_attempt_at)
        WHERE id = $1
        """,
        batch_id,
        status,
        receipt_id,
        (error or "")[:500] or None,
        next_attempt_at,
    )


async def batches(
    session: AsyncSession, after: tuple[datetime, uuid.UUID] | None, limit: int
) -> Sequence[ExchangeBatch]:
    query = select(ExchangeBatch)
    if after is not None:
        query = query.where(tuple_(ExchangeBatch.created_at, ExchangeBatch.id) < tuple_(*after))
    query = query.order_by(ExchangeBatch.created_at.desc(), ExchangeBatch.id.desc()).limit(limit)  # type: ignore[attr-defined]
    return (await session.scalars(query)).all()


def summary_of(batch: ExchangeBatch) -> dict[str, Any]:
    """What the exchange is sent of a batch, and what its evidence's header states."""
    return {
        "batch_id": str(batch.id),
        "cutoff": batch.cutoff.isoformat(),
        "actions": batch.actions,
        "grams_co2e": batch.grams_co2e,
        "adjustments": batch.adjustments,
        "adjustment_g": batch.adjustment_g,
        "net_g": batch.net_g,
        "by_kind": batch.by_kind,
        "by_methodology": batch.by_methodology,
        "merkle_root": base64.b64encode(batch.merkle_root).decode(),
    }
