"""The SQL of the redemptions feature: every query of offers and redemptions, and nothing else.

The races a redemption can run into are settled by the database: the stock by a conditional
``UPDATE`` (never below zero, also by a check constraint), one resident's redemptions of one offer
by a transaction-scoped advisory lock, and a redemption's own changes by its row lock.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
from sqlalchemy import Select, func, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from api.redemptions.models import Offer, Redemption
from domain.redemptions import OfferStatus, RedemptionStatus

#: Advisory-lock class of "a resident is redeeming an offer" (the two-int lock space).
_RESIDENT_OFFER_LOCK = 0x72646D31  # "rdm1"

#: The events of a merchant's statement, each the time column of a redemption it sets. Captures and
#: refunds move points; voids and expiries release holds.
STATEMENT_EVENTS = ("captured", "refunded", "voided", "expired")
_EVENTS_OF_PERIOD = " UNION ALL ".join(
    f"SELECT id, offer_id, '{event}' AS event, points, {event}_at AS at FROM redemptions "
    f"WHERE merchant_id = $1::uuid AND {event}_at >= $2::timestamptz AND {event}_at < $3::timestamptz"
    for event in STATEMENT_EVENTS
)
#: The period's lines after ``($4, $5)`` (a line's time and redemption id), in time order.
STATEMENT_LINES = f"""
    SELECT * FROM ({_EVENTS_OF_PERIOD}) AS lines
    WHERE (at, id) > ($4::timestamptz, $5::uuid)
    ORDER BY at, id
"""
STATEMENT_TOTALS = f"""
    SELECT event, count(*) AS count, coalesce(sum(points), 0)::bigint AS points
    FROM ({_EVENTS_OF_PERIOD}) AS lines
    GROUP BY event
"""
#: Before every line: where the first page of a statement starts.
STATEMENT_START = (datetime.min.replace(tzinfo=UTC), uuid.UUID(int=0))


def _lock_key(*ids: uuid.UUID) -> int:
    return int.from_bytes(hashlib.sha256(b"".join(i.bytes for i in ids)).digest()[:4], "big") - 2**31


# -------------------------------------------------------------------------------------------------- offers


async def offer(session: AsyncSession, offer_id: uuid.UUID, *, for_update: bool = False) -> Offer | None:
    query = select(Offer).where(Offer.id == offer_id)
    if for_update:
        query = query.with_for_update()
    return (await session.scalars(query)).first()


def _newest_first(query: Select[Any], model: Any, after: tuple[datetime, uuid.UUID] | None, limit: int) -> Select[Any]:
    if after is not None:
        query = query.where(tuple_(model.created_at, model.id) < tuple_(*after))
    return query.order_by(model.created_at.desc(), model.id.desc()).limit(limit)


async def merchant_offers(
    session: AsyncSession, merchant_id: uuid.UUID, after: tuple[datetime, uuid.UUID] | None, limit: int
) -> Sequence[Offer]:
    query = select(Offer).where(Offer.merchant_id == merchant_id)
    return (await session.scalars(_newest_first(query, Offer, after, limit))).all()


async def open_offers(
    session: AsyncSession, now: datetime, after: tuple[datetime, uuid.UUID] | None, limit: int
) -> Sequence[Offer]:
    """Offers a resident can redeem now: active, within their validity, in stock."""
    query = select(Offer).where(
        Offer.status == OfferStatus.ACTIVE.value,
        Offer.valid_from <= now,  # type: ignore[operator]
        or_(Offer.valid_until.is_(None), Offer.valid_until > now),  # type: ignore[union-attr, operator]
        or_(Offer.stock.is_(None), Offer.stock > 0),  # type: ignore[union-attr, operator]
    )
    return (await session.scalars(_newest_first(query, Offer, after, limit))).all()


async def take_stock(conn: asyncpg.Connection, offer_id: uuid.UUID) -> bool:
    """Reserve one unit; False when none is left (the offer's row lock orders concurrent takers)."""
    row = await conn.fetchrow(
        "UPDATE offers SET stock = stock - 1 WHERE id = $1 AND (stock IS NULL OR stock > 0) RETURNING id", offer_id
    )
    return row is not None


async def return_stock(conn: asyncpg.Connection, units: Mapping[uuid.UUID, int]) -> None:
    """Give units back to offers with a stock (an unlimited offer has none to return), locked in id order."""
    if not units:
        return
    ids = sorted(units)
    await conn.execute(
        """
        UPDATE offers AS o SET stock = o.stock + u.units
        FROM (SELECT o2.id FROM offers AS o2 WHERE o2.id = ANY($1::uuid[]) ORDER BY o2.id FOR UPDATE) AS locked,
             unnest($1::uuid[], $2::bigint[]) AS u(id, units)
        WHERE o.id = locked.id AND o.id = u.id AND o.stock IS NOT NULL
        """,
        ids,
        [units[i] for i in ids],
    )


# --------------------------------------------------------------------------------------------- redemptions


async def lock_resident_offer(conn: asyncpg.Connection, resident_id: uuid.UUID, offer_id: uuid.UUID) -> None:
    """Serialise one resident's redemptions of one offer until the transaction ends (the per-resident limit)."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock($1::int, $2::int)", _RESIDENT_OFFER_LOCK, _lock_key(resident_id, offer_id)
    )


async def live_redemptions(conn: asyncpg.Connection, resident_id: uuid.UUID, offer_id: uuid.UUID) -> int:
    """The resident's redemptions of the offer that count against its limit: held or captured."""
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM redemptions WHERE resident_id = $1 AND offer_id = $2 AND status = ANY($3::text[])",
            resident_id,
            offer_id,
            [RedemptionStatus.HELD.value, RedemptionStatus.CAPTURED.value],
        )
    )


async def insert_held(conn: asyncpg.Connection, r: Redemption) -> bool:
    """Store a new held redemption; False when its code is the code of another held redemption."""
    row = await conn.fetchrow(
        """
        INSERT INTO redemptions (id, offer_id, merchant_id, resident_id, points, status, code_hash, code_sealed,
            hold_transfer_id, created_at, expires_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
        ON CONFLICT (code_hash) WHERE status = 'held' DO NOTHING
        RETURNING id
        """,
        r.id,
        r.offer_id,
        r.merchant_id,
        r.resident_id,
        r.points,
        r.status,
        r.code_hash,
        r.code_sealed,
        r.hold_transfer_id,
        r.created_at,
        r.expires_at,
    )
    return row is not None


async def redemption_for_update(session: AsyncSession, redemption_id: uuid.UUID) -> Redemption | None:
    query = select(Redemption).where(Redemption.id == redemption_id).with_for_update()
    return (await session.scalars(query.execution_options(populate_existing=True))).first()


async def redemption_by_code_for_update(session: AsyncSession, code_hash: bytes) -> Redemption | None:
    """The redemption a code names: the held one (codes are unique among held redemptions), else the latest.

    A code may come back once its redemption is no longer held (30^10 codes; only live ones must differ).
    """
    query = (
        select(Redemption)
        .where(Redemption.code_hash == code_hash)  # type: ignore[arg-type]
        .order_by((Redemption.status == RedemptionStatus.HELD.value).desc(), Redemption.created_at.desc())  # type: ignore[attr-defined]
        .limit(1)
        .with_for_update()
    )
    return (await session.scalars(query.execution_options(populate_existing=True))).first()


async def due_holds(session: AsyncSession, limit: int) -> Sequence[Redemption]:
    """Held redemptions past their expiry that no other transaction is working on, oldest first."""
    query = (
        select(Redemption)
        .where(Redemption.status == RedemptionStatus.HELD.value, Redemption.expires_at <= func.now())  # type: ignore[operator]
        .order_by(Redemption.expires_at)  # type: ignore[arg-type]
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return (await session.scalars(query)).all()


async def resident_redemptions(
    session: AsyncSession, resident_id: uuid.UUID, after: tuple[datetime, uuid.UUID] | None, limit: int
) -> Sequence[Redemption]:
    query = select(Redemption).where(Redemption.resident_id == resident_id)
    return (await session.scalars(_newest_first(query, Redemption, after, limit))).all()


async def merchant_redemptions(
    session: AsyncSession,
    merchant_id: uuid.UUID,
    *,
    status: str | None,
    offer_id: uuid.UUID | None,
    created_from: datetime | None,
    created_to: datetime | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> Sequence[Redemption]:
    query = select(Redemption).where(Redemption.merchant_id == merchant_id)
    if status is not None:
        query = query.where(Redemption.status == status)
    if offer_id is not None:
        query = query.where(Redemption.offer_id == offer_id)
    if created_from is not None:
        query = query.where(Redemption.created_at >= created_from)  # type: ignore[operator]
    if created_to is not None:
        query = query.where(Redemption.created_at < created_to)  # type: ignore[operator]
    return (await session.scalars(_newest_first(query, Redemption, after, limit))).all()


async def statement_totals(
    conn: asyncpg.Connection, merchant_id: uuid.UUID, start: datetime, end: datetime
) -> dict[str, tuple[int, int]]:
    """(count, points) per event of the period."""
    rows = await conn.fetch(STATEMENT_TOTALS, merchant_id, start, end)
    return {r["event"]: (r["count"], r["points"]) for r in rows}
