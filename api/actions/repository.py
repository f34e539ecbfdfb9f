"""The SQL of the actions feature: every query of its tables, and nothing else.

The ingestion path runs on the request transaction's asyncpg connection with set-based statements
(``unnest``); the rest uses the ORM session. Keyed reads probe an index once per key
(``LATERAL … OFFSET 0``) rather than filtering with ``col = ANY($1)``: a plan cached while the table
was small (a new deployment, before autovacuum's first ANALYZE) would otherwise keep scanning the
whole table as it grows (docs/ledger.md; ``tests/test_query_plans.py`` plans each of them).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import Any

import asyncpg
from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from api.actions.models import TRADE_TAKEN, Action, ActionReview, PartnerLink
from domain.actions import ActionStatus
from domain.decision import NewAction, PriorDecision
from domain.fraud import TransitMode, Trip

#: Advisory-lock class of "one resident's actions are being decided" (the two-int lock space).
RESIDENT_LOCK_CLASS = 0x61637431  # "act1"
#: Advisory-lock class of "a partner's trade is being decided", taken after the residents' class.
TRADE_LOCK_CLASS = 0x74726431  # "trd1"
#: Stripes of a partner's hourly volume counter.
VOLUME_SLOTS = 16

EXISTING_ACTIONS = """
    SELECT a.* FROM unnest($1::uuid[]) AS k(id)
    CROSS JOIN LATERAL (SELECT id, status, reason FROM actions WHERE id = k.id OFFSET 0) AS a
"""
EARLIER_TRIPS = """
    SELECT t.* FROM unnest($1::uuid[]) AS k(id)
    CROSS JOIN LATERAL (
        SELECT resident_id, category, started_at, occurred_at, quantity FROM actions
        WHERE resident_id = k.id AND kind = 'transit' AND status IN ('credited', 'pending_review', 'reversed')
          AND occurred_at > $2::timestamptz AND started_at < $3::timestamptz
        OFFSET 0
    ) AS t
"""
CAP_USAGE = """
    SELECT u.* FROM unnest($1::uuid[]) AS k(id)
    CROSS JOIN LATERAL (
        SELECT resident_id, kind, local_day, sum(points)::bigint AS points FROM actions
        WHERE resident_id = k.id AND status = 'credited' AND local_day >= $2::date
        GROUP BY 1, 2, 3 OFFSET 0
    ) AS u
"""
_INSERT_ACTIONS = """
    INSERT INTO actions (id, partner_id, source, external_id, resident_id, account_ref, kind, category, quantity,
        started_at, occurred_at, local_day, status, reason, grams_co2e, points, points_withheld, cap_reason,
        methodology_id, methodology_version, factor, record, decided_at, trade_ref)
    SELECT u.id, $1, $2, u.external_id, u.resident_id, u.account_ref, u.kind, u.category, u.quantity,
        u.started_at, u.occurred_at, u.local_day, u.status, u.reason, u.grams_co2e, u.points, u.points_withheld,
        u.cap_reason, u.methodology_id, u.methodology_version, u.factor, u.record::jsonb, u.decided_at, u.trade_ref
    FROM unnest($3::uuid[], $4::text[], $5::uuid[], $6::text[], $7::text[], $8::text[], $9::bigint[],
        $10::timestamptz[], $11::timestamptz[], $12::date[], $13::text[], $14::text[], $15::bigint[],
        $16::bigint[], $17::bigint[], $18::text[], $19::text[], $20::int[], $21::text[], $22::text[],
        $23::timestamptz[], $24::text[])
        AS u(id, external_id, resident_id, account_ref, kind, category, quantity, started_at, occurred_at,
             local_day, status, reason, grams_co2e, points, points_withheld, cap_reason, methodology_id,
             methodology_version, factor, record, decided_at, trade_ref)
    ORDER BY u.id
    ON CONFLICT DO NOTHING
    RETURNING id
"""
#: The submission's trades (``$2``) that an action of the partner (``$1``) already holds.
TAKEN_TRADES = f"""
    SELECT trade_ref FROM actions
    WHERE partner_id = $1::uuid AND trade_ref = ANY($2::text[]) AND {TRADE_TAKEN}
"""


def resident_lock_key(resident_id: uuid.UUID) -> int:
    return int.from_bytes(resident_id.bytes[:4], "big", signed=True)


def trade_lock_key(partner_id: uuid.UUID, trade_ref: str) -> int:
    digest = hashlib.blake2b(partner_id.bytes + trade_ref.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


# ------------------------------------------------------------------------------- what a decision reads


async def links_for(conn: asyncpg.Connection, partner_id: uuid.UUID, refs: set[str]) -> dict[str, uuid.UUID]:
    """The resident who linked each of ``refs`` at the partner (unlinked ones are absent)."""
    if not refs:
        return {}
    rows = await conn.fetch(
        "SELECT partner_account_ref, resident_id FROM partner_links "
        "WHERE partner_id = $1 AND partner_account_ref = ANY($2::text[]) AND unlinked_at IS NULL",
        partner_id,
        list(refs),
    )
    return {r["partner_account_ref"]: r["resident_id"] for r in rows}


async def lock_residents(
    conn: asyncpg.Connection,
    residents: Sequence[uuid.UUID],
    partner_id: uuid.UUID | None = None,
    trade_refs: Iterable[str] = (),
) -> None:
    """Serialise deciding for these residents (and the partner's trades) until the transaction ends.

    Caps, the overlapping-trip rule and one credit per trade then see every earlier decision, even of a
    concurrent submission. Advisory locks are taken in one fixed order, residents' class before trades'.
    """
    keys = [(RESIDENT_LOCK_CLASS, k) for k in sorted({resident_lock_key(r) for r in residents})]
    if partner_id is not None:
        keys += [(TRADE_LOCK_CLASS, k) for k in sorted({trade_lock_key(partner_id, t) for t in trade_refs})]
    if keys:
        await conn.execute(
            "SELECT pg_advisory_xact_lock(c, k) FROM unnest($1::int[], $2::int[]) WITH ORDINALITY AS l(c, k, i) "
            "ORDER BY i",
            [c for c, _ in keys],
            [k for _, k in keys],
        )


async def decided_before(conn: asyncpg.Connection, ids: list[uuid.UUID]) -> dict[uuid.UUID, PriorDecision]:
    rows = await conn.fetch(EXISTING_ACTIONS, ids)
    return {r["id"]: PriorDecision(r["status"], r["reason"]) for r in rows}


async def taken_trades(conn: asyncpg.Connection, partner_id: uuid.UUID, trade_refs: set[str]) -> frozenset[str]:
    """Which of these trades of the partner an action already holds (credited, held for review or reversed)."""
    if not trade_refs:
        return frozenset()
    return frozenset(r["trade_ref"] for r in await conn.fetch(TAKEN_TRADES, partner_id, sorted(trade_refs)))


async def earlier_trips(
    conn: asyncpg.Connection, residents: set[uuid.UUID], start: datetime, end: datetime
) -> dict[uuid.UUID, list[Trip]]:
    """Credited and held trips of these residents that end after ``start`` and begin before ``end``."""
    trips: dict[uuid.UUID, list[Trip]] = defaultdict(list)
    for r in await conn.fetch(EARLIER_TRIPS, sorted(residents), start, end):
        trips[r["resident_id"]].append(
            Trip(TransitMode(r["category"]), r["started_at"], r["occurred_at"], r["quantity"])
        )
    return trips


async def points_credited(
    conn: asyncpg.Connection, residents: set[uuid.UUID], since: date
) -> dict[tuple[uuid.UUID, str, date], int]:
    """Points credited per (resident, kind, local day), from ``since`` on."""
    if not residents:
        return {}
    rows = await conn.fetch(CAP_USAGE, sorted(residents), since)
    return {(r["resident_id"], r["kind"], r["local_day"]): r["points"] for r in rows}


async def hourly_volume(conn: asyncpg.Connection, partner_id: uuid.UUID, since: datetime) -> dict[datetime, int]:
    """Records the partner pushed per hour, from the hour ``since`` on."""
    rows = await conn.fetch(
        "SELECT hour, sum(records)::bigint AS records FROM partner_hourly_volume "
        "WHERE partner_id = $1 AND hour >= $2 GROUP BY hour",
        partner_id,
        since,
    )
    return {r["hour"]: r["records"] for r in rows}


# ---------------------------------------------------------------------------------------------- writes


async def remember_signatures(conn: asyncpg.Connection, partner_id: uuid.UUID, digests: Sequence[str]) -> set[str]:
    """Record signed requests' digests in one statement; returns those not received before (the rest are
    replays). A digest given twice is returned once: the first request with it is the original."""
    rows = await conn.fetch(
        "INSERT INTO partner_request_signatures (partner_id, digest) SELECT $1, d FROM unnest($2::text[]) AS d "
        "ON CONFLICT DO NOTHING RETURNING digest",
        partner_id,
        list(digests),
    )
    return {row["digest"] for row in rows}


async def count_volume(conn: asyncpg.Connection, partner_id: uuid.UUID, hour: datetime, records: int) -> None:
    await conn.execute(
        "INSERT INTO partner_hourly_volume (partner_id, hour, slot, records) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (partner_id, hour, slot) DO UPDATE SET records = partner_hourly_volume.records + EXCLUDED.records",
        partner_id,
        hour,
        conn.get_server_pid() % VOLUME_SLOTS,  # concurrent transactions rarely share a slot (as ledger balances)
        records,
    )


async def insert_actions(
    conn: asyncpg.Connection,
    partner_id: uuid.UUID,
    source: str,
    actions: list[NewAction],
    now: datetime,
    credited_at: Mapping[uuid.UUID, datetime],
) -> set[uuid.UUID]:
    """Store decided actions; returns the ids inserted (a concurrent submission may have stored some first,
    or taken their trade: one record per trade is stored as credited or held, ``uq_actions_partner_trade``).

    A credited action is decided when its credit was written (``credited_at``), any other at ``now``.
    """
    if not actions:
        return set()
    columns: tuple[list[Any], ...] = tuple([] for _ in range(22))
    for a in actions:
        r, red = a.record, a.reduction
        for column, value in zip(
            columns,
            (
                a.id,
                r.external_id,
                a.resident_id,
                r.account_ref,
                r.kind.value,
                r.category,
                r.quantity,
                r.started_at,
                r.occurred_at,
                a.day,
                a.status.value,
                str(a.reason) if a.reason else None,
                red.grams_co2e if red else 0,
                a.points,
                a.points_withheld,
                a.cap_reason,
                red.methodology_id if red else None,
                red.methodology_version if red else None,
                str(red.factor) if red else None,
                json.dumps(a.raw),  # jsonb orders the keys itself
                None if a.status is ActionStatus.PENDING_REVIEW else credited_at.get(a.id, now),
                r.trade_ref,
            ),
            strict=True,
        ):
            column.append(value)
    rows = await conn.fetch(_INSERT_ACTIONS, partner_id, source, *columns)
    return {r["id"] for r in rows}


# ------------------------------------------------------------------------------------------ the session


async def active_link(session: AsyncSession, partner_id: uuid.UUID, account_ref: str) -> PartnerLink | None:
    return (
        await session.scalars(
            select(PartnerLink).where(
                PartnerLink.partner_id == partner_id,
                PartnerLink.partner_account_ref == account_ref,
                PartnerLink.unlinked_at.is_(None),  # type: ignore[union-attr]
            )
        )
    ).first()


async def resident_links(
    session: AsyncSession, resident_id: uuid.UUID, partner_id: uuid.UUID | None = None
) -> Sequence[PartnerLink]:
    """The resident's active links, oldest first; only those at ``partner_id`` when it is given."""
    query = select(PartnerLink).where(
        PartnerLink.resident_id == resident_id,
        PartnerLink.unlinked_at.is_(None),  # type: ignore[union-attr]
    )
    if partner_id is not None:
        query = query.where(PartnerLink.partner_id == partner_id)
    return (await session.scalars(query.order_by(PartnerLink.created_at))).all()  # type: ignore[arg-type]


async def resident_actions(
    session: AsyncSession, resident_id: uuid.UUID, after: tuple[datetime, uuid.UUID] | None, limit: int
) -> Sequence[Action]:
    """Up to ``limit`` of the resident's actions received before ``after``, newest first."""
    query = select(Action).where(Action.resident_id == resident_id)
    if after is not None:
        query = query.where(tuple_(Action.received_at, Action.id) < tuple_(*after))
    return (
        await session.scalars(query.order_by(Action.received_at.desc(), Action.id.desc()).limit(limit))  # type: ignore[attr-defined]
    ).all()


async def resident_action(session: AsyncSession, resident_id: uuid.UUID, action_id: uuid.UUID) -> Action | None:
    """The action, if it is the resident's."""
    return (
        await session.scalars(select(Action).where(Action.resident_id == resident_id).where(Action.id == action_id))
    ).one_or_none()


async def impact_by_month(conn: asyncpg.Connection, resident_id: uuid.UUID) -> list[tuple[str, str, int]]:
    """Grams CO₂e of the resident's credited actions per (month, kind), oldest month first."""
    rows = await conn.fetch(
        "SELECT to_char(local_day, 'YYYY-MM') AS month, kind, sum(grams_co2e)::bigint AS grams FROM actions "
        "WHERE resident_id = $1 AND status = 'credited' GROUP BY 1, 2 ORDER BY 1, 2",
        resident_id,
    )
    return [(r["month"], r["kind"], r["grams"]) for r in rows]


async def held_actions(session: AsyncSession, limit: int) -> Sequence[Action]:
    """Actions waiting for review, oldest first."""
    return (
        await session.scalars(
            select(Action)
            .where(Action.status == ActionStatus.PENDING_REVIEW.value)
            .order_by(Action.received_at, Action.id)  # type: ignore[arg-type]
            .limit(limit)
        )
    ).all()


async def resident_of_action(conn: asyncpg.Connection, action_id: uuid.UUID) -> uuid.UUID | None:
    return await conn.fetchval("SELECT resident_id FROM actions WHERE id = $1", action_id)  # type: ignore[no-any-return]


async def action_for_update(session: AsyncSession, action_id: uuid.UUID) -> Action:
    """The action, row-locked and read afresh (not from the session's identity map)."""
    return (
        await session.scalars(
            select(Action).where(Action.id == action_id).with_for_update().execution_options(populate_existing=True)
        )
    ).one()


async def insert_review(
    conn: asyncpg.Connection, action_id: uuid.UUID, operator_id: uuid.UUID | None, decision: str, reason: str
) -> None:
    await conn.execute(
        "INSERT INTO action_reviews (action_id, operator_id, decision, reason) VALUES ($1, $2, $3, $4)",
        action_id,
        operator_id,
        decision,
        reason,
    )


async def operator_actions(
    session: AsyncSession, where: Any, after: tuple[datetime, uuid.UUID] | None, limit: int
) -> Sequence[Action]:
    """Actions matching an ``oversight.ActionFilter``, newest received first."""
    query = select(Action)
    for column, value in (
        (Action.resident_id, where.resident_id),
        (Action.partner_id, where.partner_id),
        (Action.kind, where.kind),
        (Action.status, where.status),
        (Action.reason, where.reason),
    ):
        if value is not None:
            query = query.where(column == value)
    if where.received_from is not None:
        query = query.where(Action.received_at >= where.received_from)  # type: ignore[operator]
    if where.received_to is not None:
        query = query.where(Action.received_at < where.received_to)  # type: ignore[operator]
    if after is not None:
        query = query.where(tuple_(Action.received_at, Action.id) < tuple_(*after))
    query = query.order_by(Action.received_at.desc(), Action.id.desc()).limit(limit)  # type: ignore[attr-defined]
    return (await session.scalars(query)).all()


async def review_of(session: AsyncSession, action_id: uuid.UUID) -> ActionReview | None:
    return (await session.scalars(select(ActionReview).where(ActionReview.action_id == action_id))).first()
