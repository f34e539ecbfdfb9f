"""Ingestion: a partner's signed push, or a resident's claim, decided and credited in one transaction.

Every submission goes the same way, in the request's transaction, so that an action's final state
and its credit commit together or not at all:

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

import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession

from api.actions import crediting, events, repository
from api.actions.errors import NotLinkedAtPartner, RecordNotFound
from api.actions.runtime import ActionsRuntime, get_partner
from api.database import after_commit, lookup_session, raw_connection
from domain.actions import MAX_BATCH, ActionKind, ActionStatus, InvalidRecord, local_day, month_start, parse_record
from domain.decision import Decision, Known, Rules, Submitted, decide, parse_submission
from domain.errors import InvalidInput, MalformedBody
from domain.fraud import VOLUME_HISTORY, hour_of
from domain.identity import Principal
from domain.signatures import SignatureReplayed, verify
from ledger import LedgerConflict
from integrations.partners import PartnerBadResponse


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_batch(body: bytes) -> list[Any]:
    """The ``records`` of a push body: a JSON object with 1 to 1,000 records."""
    try:
        document = json.loads(body, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        raise MalformedBody("the body is not JSON") from None
    records = document.get("records") if isinstance(document, dict) else None
    if not isinstance(records, list) or not 1 <= len(records) <= MAX_BATCH:
        raise InvalidInput(f'send {{"records": [...]}} with 1 to {MAX_BATCH} records', field="records")
    return records


async def push_batch(
    session: AsyncSession,
    rt: ActionsRuntime,
    principal: Principal,
    signature: str | None,
    path: str,
    body: bytes,
) -> list[Decision]:
    """A partner's signed batch: verify the signature, refuse replays, decide every record."""
    partner = await get_partner(session, principal.subject_id)
    now = datetime.now(UTC)
    tolerance = rt.signature_tolerance_s
    digest = verify(signature, rt.webhook_secret(partner), int(now.timestamp()), "POST", path, body, tolerance)
    raws = parse_batch(body)
    conn = await raw_connection(session)
    if not await repository.remember_signature(conn, partner.id, digest):
        raise SignatureReplayed("a request with this signature was already received; sign each request anew")
    decisions = await ingest(conn, rt, partner.id, ActionKind(partner.kind), raws, "push", now)
    _count_after_commit(session, rt, partner.kind, decisions)
    return decisions


async def claim(
    session: AsyncSession, rt: ActionsRuntime, resident_id: uuid.UUID, partner_id: uuid.UUID, external_id: str
) -> Decision:
    """A resident's claim: fetch the record from the partner, check it is theirs, decide it like a push.

    The partner is called before anything is written, and with no database connection held (see
    ``lookup_session``); the decision re-reads the links in the request's transaction.
    """
    async with lookup_session(session) as lookup:
        partner = await get_partner(lookup, partner_id)
        refs = {link.partner_account_ref for link in await repository.resident_links(lookup, resident_id, partner_id)}
        endpoint, kind = rt.endpoint(partner), ActionKind(partner.kind)
    if not refs:
        raise NotLinkedAtPartner("link your account at this partner first (POST /v1/me/links)")
    raw = await rt.partners.fetch_record(endpoint, external_id)
    if raw is None:
        raise RecordNotFound(f"the partner has no record {external_id!r}")
    try:
        record = parse_record(kind, raw)
    except InvalidRecord as exc:
        raise PartnerBadResponse(f"the partner's record is malformed: {exc.detail}") from None
    if record.external_id != external_id:
        raise PartnerBadResponse("the partner answered with a different record than the one asked for")
    if record.account_ref not in refs:
        raise RecordNotFound(f"the partner has no record {external_id!r} for your linked accounts")
    [decision] = await ingest(await raw_connection(session), rt, partner_id, kind, [raw], "claim", datetime.now(UTC))
    _count_after_commit(session, rt, kind, [decision])
    return decision


def _count_after_commit(session: AsyncSession, rt: ActionsRuntime, kind: str, decisions: list[Decision]) -> None:
    observe = rt.observe_decided
    if observe is not None:
        decided = [(d.outcome.value, d.grams_co2e) for d in decisions]
        after_commit(session, lambda: observe(str(kind), decided))


async def ingest(
    conn: asyncpg.Connection,
    rt: ActionsRuntime,
    partner_id: uuid.UUID,
    kind: ActionKind,
    raws: list[Any],
    source: str,
    now: datetime,
) -> list[Decision]:
    """Parse, read, decide and write one submission (a push's batch or a claim's record)."""
    submitted = parse_submission(partner_id, kind, raws)
    known = await read(conn, rt.rules, partner_id, submitted, now, volume_rule=source == "push")
    decisions = decide(submitted, known, rt.rules, now)
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
