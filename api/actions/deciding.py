"""Deciding a batch of records inside a transaction: parse, read, decide, write.

Every submission goes this way, in one transaction (a group's, see ``grouping``), so that an
action's final state and its credit commit together or not at all:

1. **parse** each record (``domain.decision.parse_submission``; a malformed one fails on its own);
2. **read** what the decision needs (``read``): the linked residents, locked in a fixed order, the
   records decided before, the residents' earlier trips and credited points, the partner's volume;
3. **decide** every record (``domain.decision.decide``, pure);
4. **write** the ledger credits of the credited ones (``crediting``; an action's ``decided_at`` is its
   credit's ledger timestamp, so that reports by time agree with the ledger to the microsecond), the
   new actions, the events the partner subscribed to (``events``) and the partner's volume; a record
   a concurrent submission decided first answers ``duplicate``.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from api.actions import crediting, events, repository
from domain.actions import ActionKind, ActionStatus, local_day, month_start
from domain.decision import Decision, Known, Rules, Submitted, decide, parse_submission
from domain.fraud import VOLUME_HISTORY, hour_of
from ledger import LedgerConflict


async def ingest(
    conn: asyncpg.Connection,
    rules: Rules,
    partner_id: uuid.UUID,
    kind: ActionKind,
    raws: list[Any],
    source: str,
    now: datetime,
) -> list[Decision]:
    """Parse, read, decide and write one batch of records (one request's, or a group's in arrival order)."""
    submitted = parse_submission(partner_id, kind, raws)
    known = await read(conn, rules, partner_id, submitted, now, volume_rule=source == "push")
    decisions = decide(submitted, known, rules, now)
    new = [d.action for d in decisions if d.action is not None]
    credited = await crediting.credit(
        conn,
        [
            crediting.Credit(a.id, a.resident_id, a.reduction, a.points)
            for a in new
            if a.status is ActionStatus.CREDITED and a.reduction is not None
        ],
    )
    fresh = [a for a in new if a.id not in credited.written_before]
    stored = await repository.insert_actions(conn, partner_id, source, fresh, now, credited.at)
    if any(a.id in credited.at and a.id not in stored for a in fresh):
        raise LedgerConflict("a concurrent submission decided one of these records otherwise; retry the request")
    await events.decided(conn, partner_id, [a for a in fresh if a.id in stored])
    if source == "push":
        await repository.count_volume(conn, partner_id, hour_of(now), len(raws))
    # A record absent from ``stored`` was decided by a concurrent submission between our read and our write.
    return [d if d.action is None or d.action.id in stored else d.lost_race() for d in decisions]


async def read(
    conn: asyncpg.Connection,
    rules: Rules,
    partner_id: uuid.UUID,
    submitted: Sequence[Submitted],
    now: datetime,
    *,
    volume_rule: bool,
) -> Known:
    """What deciding ``submitted`` depends on, read under the locks of the residents it names."""
    records = [s.record for s in submitted if s.record is not None]
    links = await repository.links_for(conn, partner_id, {r.account_ref for r in records})
    residents = sorted(set(links.values()))
    linked = [r for r in records if r.account_ref in links]
    trade_refs = {r.trade_ref for r in linked if r.trade_ref is not None}
    await repository.lock_residents(conn, residents, partner_id, trade_refs)
    decided = await repository.decided_before(conn, [s.action_id for s in submitted if s.action_id is not None])
    trips = [r for r in linked if r.kind is ActionKind.TRANSIT]
    known_trips = (
        await repository.earlier_trips(
            conn,
            {links[r.account_ref] for r in trips},
            min(r.started_at for r in trips if r.started_at is not None),
            max(r.occurred_at for r in trips),
        )
        if trips
        else {}
    )
    earliest = min((r.occurred_at for r in linked), default=None)
    points = (
        await repository.points_credited(conn, set(residents), month_start(local_day(earliest, rules.local_offset)))
        if earliest is not None
        else {}
    )
    allowance = None
    if volume_rule:
        hourly = await repository.hourly_volume(conn, partner_id, hour_of(now) - VOLUME_HISTORY)
        allowance = rules.anomaly.allowance(hourly, now)
    trades = await repository.taken_trades(conn, partner_id, trade_refs)
    return Known(links, decided, known_trips, points, allowance, trades)
