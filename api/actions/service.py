"""Actions: linking partner accounts, ingesting records (push and claim), reviews, resident views.

Ingestion decides a whole submission in the request's transaction, which also writes the ledger
transfers, so an action's final state and its credit commit together or not at all:

1. parse each record (malformed ones are refused on their own, never the whole batch);
2. find the linked resident of each record's partner account;
3. lock those residents (advisory locks, in a fixed order) so that caps and the overlapping-trip
   rule see every earlier decision, even of a concurrent submission;
4. skip records already decided (``(partner, external_id)`` is unique: ``duplicate``);
5. judge each record (``domain.actions.assess``), hold it for review when the partner's volume is
   anomalous, apply the daily and monthly caps to its points;
6. insert the decided actions, and for each credited one two linked transfers whose ids derive
   from the action id: points from issuance to the resident, grams CO₂e from the resident's carbon
   account to the carbon pool.

The hot path uses the session's asyncpg connection directly (set-based ``unnest`` inserts), the
same transaction as the ORM's work.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
from sqlalchemy import select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api.actions.models import Action, PartnerLink
from api.auth.keys import ServerSecret
from api.auth.models import Partner
from api.auth.service import RequestMeta, record_operator_action
from domain.actions import (
    MAX_BATCH,
    ActionKind,
    ActionRecord,
    ActionStatus,
    InvalidRecord,
    Outcome,
    Reason,
    action_id,
    anomaly_threshold,
    assess,
    local_day,
    month_start,
    parse_record,
    storable,
)
from domain.errors import Conflict, InvalidInput, NotFound
from domain.fraud import TransitMode, Trip, TripHistory, apply_caps
from domain.identity import Principal
from domain.methodologies import MethodologyRegistry, Reduction, points_for
from domain.signatures import SignatureReplayed, verify
from integrations.partners import PartnerBadResponse, PartnerEndpoint, PartnerGateway
from ledger import (
    CARBON_POOL,
    ISSUANCE_POINTS,
    SYSTEM_ACCOUNTS,
    LedgerConflict,
    LedgerUnit,
    NewTransfer,
    TransferCode,
    account_entries,
    apply_in_transaction,
    get_balances,
    resident_carbon_account,
    resident_points_account,
)

#: Advisory-lock class of "one resident's actions are being decided" (the two-int lock space).
RESIDENT_LOCK_CLASS = 0x61637431  # "act1"
#: Stripes of a partner's hourly volume counter.
VOLUME_SLOTS = 16
#: How far back a partner's usual hourly volume is measured.
VOLUME_HISTORY = timedelta(days=7)

# Keyed reads probe an index once per key (LATERAL … OFFSET 0) rather than filtering with
# ``col = ANY($1)``: a plan cached while the table was small (a new deployment, before autovacuum's
# first ANALYZE) would otherwise keep scanning the whole table as it grows (see docs/ledger.md).
EXISTING_ACTIONS = """
    SELECT a.* FROM unnest($1::uuid[]) AS k(id)
    CROSS JOIN LATERAL (SELECT id, status, reason FROM actions WHERE id = k.id OFFSET 0) AS a
"""
EARLIER_TRIPS = """
    SELECT t.* FROM unnest($1::uuid[]) AS k(id)
    CROSS JOIN LATERAL (
        SELECT resident_id, category, started_at, occurred_at, quantity FROM actions
        WHERE resident_id = k.id AND kind = 'transit' AND status IN ('credited', 'pending_review')
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
class PartnerNotFound(NotFound):
    code = "partner_not_found"
    title = "No such partner"


class LinkNotFound(NotFound):
    code = "link_not_found"
    title = "No such linked account"


class AccountAlreadyLinked(Conflict):
    code = "account_already_linked"
    title = "This partner account is linked to another resident"


class LinkNotVerified(InvalidInput):
    code = "link_not_verified"
    title = "The partner did not confirm the link code for this account"


class NotLinkedAtPartner(InvalidInput):
    code = "not_linked_at_partner"
    title = "Link an account at this partner before claiming its records"


class RecordNotFound(NotFound):
    code = "record_not_found"
    title = "The partner has no such record for your linked accounts"


class ActionNotFound(NotFound):
    code = "action_not_found"
    title = "No such action"


class AlreadyReviewed(Conflict):
    code = "already_reviewed"
    title = "This action is not waiting for review"


class LedgerBusy(Conflict):
    code = "ledger_busy"
    title = "The ledger was busy with a conflicting write; retry the request"


class CreditFailed(Conflict):
    code = "credit_failed"
    title = "The ledger refused the credit"


@dataclass(frozen=True)
class Caps:
    daily: dict[str, int]
    monthly: dict[str, int]


@dataclass(frozen=True)
class ActionsRuntime:
    """What ingestion needs besides a session; built once by the app factory."""

    methodologies: MethodologyRegistry
    points_per_kg: Decimal
    caps: Caps
    local_offset: timedelta
    anomaly_factor: int
    anomaly_floor_per_hour: int
    signature_tolerance_s: int
    partners: PartnerGateway
    secret: ServerSecret


@dataclass(frozen=True)
class RecordResult:
    """The outcome of one submitted record."""

    index: int
    external_id: str | None
    outcome: Outcome
    action_id: uuid.UUID | None = None
    reason: str | None = None
    detail: str | None = None
    grams_co2e: int = 0
    points: int = 0
    points_withheld: int = 0
    cap_reason: str | None = None
    methodology_id: str | None = None
    methodology_version: int | None = None


@dataclass
class _Decided:
    """An action about to be inserted."""

    id: uuid.UUID
    record: ActionRecord
    raw: dict[str, Any]
    resident_id: uuid.UUID
    day: date
    status: ActionStatus
    reason: str | None = None
    reduction: Reduction | None = None
    points: int = 0
    withheld: int = 0
    cap_reason: str | None = None
    index: int = 0


def _now() -> datetime:
    return datetime.now(UTC)


async def raw_connection(session: AsyncSession) -> asyncpg.Connection:
    """The asyncpg connection under the session, inside the session's transaction.

    SQLAlchemy's asyncpg adapter sends BEGIN only with the first statement, so one is sent through
    the session when none has been yet; otherwise statements on the raw connection would each commit
    on their own, outside the transaction that the request commits or rolls back.
    """
    connection = await session.connection()
    driver: asyncpg.Connection = (await connection.get_raw_connection()).driver_connection  # type: ignore[assignment]
    if not driver.is_in_transaction():
        await connection.exec_driver_sql("SELECT 1")
    return driver


def lookup_session(session: AsyncSession) -> AsyncSession:
    """A short read-only session beside the request's, for what must be read before calling a partner.

    The request's session keeps its connection until the request ends; a partner call made while it
    holds one would let requests waiting on a slow partner take every connection of the (fixed)
    pool from all other requests. Closing this session gives its connection back before the call.
    """
    return AsyncSession(session.bind, expire_on_commit=False)


async def _partner(session: AsyncSession, partner_id: uuid.UUID) -> Partner:
    partner = await session.get(Partner, partner_id)
    if partner is None:
        raise PartnerNotFound(f"no partner {partner_id}")
    return partner


def _webhook_secret(rt: ActionsRuntime, partner: Partner) -> str:
    return rt.secret.unseal(partner.webhook_secret_sealed)


def _endpoint(rt: ActionsRuntime, partner: Partner) -> PartnerEndpoint:
    return PartnerEndpoint(partner.id, partner.api_base_url, _webhook_secret(rt, partner))


# ----------------------------------------------------------------------------------------------- links


async def link_account(
    session: AsyncSession,
    rt: ActionsRuntime,
    resident_id: uuid.UUID,
    partner_id: uuid.UUID,
    account_ref: str,
    link_code: str,
) -> tuple[PartnerLink, bool]:
    """Link a partner account once the partner confirms the code it showed to the account's holder.

    Returns the link and whether it is new; linking an account the resident already holds is a no-op.
    The partner is asked with no database connection held (see ``lookup_session``); the unique index
    on active links settles a race with another resident meanwhile.
    """
    async with lookup_session(session) as lookup:
        endpoint = _endpoint(rt, await _partner(lookup, partner_id))
        existing = await _active_link(lookup, partner_id, account_ref)
    if existing is not None:
        if existing.resident_id == resident_id:
            return existing, False
        raise AccountAlreadyLinked("this account is linked to another resident; they must unlink it first")
    link_id = uuid.uuid4()  # also the verification's request id, the same in each of its retries
    if not await rt.partners.verify_account(endpoint, account_ref, link_code, link_id):
        raise LinkNotVerified("ask the partner's app for a new link code and try again")
    link = PartnerLink(id=link_id, resident_id=resident_id, partner_id=partner_id, partner_account_ref=account_ref)
    session.add(link)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError:
        raced = await _active_link(session, partner_id, account_ref)
        if raced is not None and raced.resident_id == resident_id:
            return raced, False
        raise AccountAlreadyLinked("this account was just linked to another resident") from None
    await session.refresh(link)
    return link, True


async def _active_link(session: AsyncSession, partner_id: uuid.UUID, account_ref: str) -> PartnerLink | None:
    return (
        await session.scalars(
            select(PartnerLink).where(
                PartnerLink.partner_id == partner_id,
                PartnerLink.partner_account_ref == account_ref,
                PartnerLink.unlinked_at.is_(None),  # type: ignore[union-attr]
            )
        )
    ).first()


async def list_links(
    session: AsyncSession, resident_id: uuid.UUID, partner_id: uuid.UUID | None = None
) -> Sequence[PartnerLink]:
    """The resident's active links, oldest first; only those at ``partner_id`` when it is given."""
    query = select(PartnerLink).where(
        PartnerLink.resident_id == resident_id, PartnerLink.unlinked_at.is_(None)  # type: ignore[union-attr]
    )
    if partner_id is not None:
        query = query.where(PartnerLink.partner_id == partner_id)
    return (await session.scalars(query.order_by(PartnerLink.created_at))).all()  # type: ignore[arg-type]


async def unlink(session: AsyncSession, resident_id: uuid.UUID, link_id: uuid.UUID) -> None:
    """End a link; records of the account are refused again until someone links it."""
    link = await session.get(PartnerLink, link_id)
    if link is None or link.resident_id != resident_id or link.unlinked_at is not None:
        raise LinkNotFound(f"no linked account {link_id}")
    link.unlinked_at = _now()
    await session.flush()


# ------------------------------------------------------------------------------------------- ingestion


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_batch(body: bytes) -> list[Any]:
    """The ``records`` of a push body: a JSON object with 1 to 1,000 records."""
    try:
        document = json.loads(body, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        raise InvalidInput("the body is not JSON") from None
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
) -> list[RecordResult]:
    """A partner's signed batch: verify the signature, refuse replays, decide every record."""
    partner = await _partner(session, principal.subject_id)
    now = _now()
    digest = verify(
        signature, _webhook_secret(rt, partner), int(now.timestamp()), "POST", path, body, rt.signature_tolerance_s
    )
    records = parse_batch(body)
    conn = await raw_connection(session)
    first_time = await conn.fetchval(
        "INSERT INTO partner_request_signatures (partner_id, digest) VALUES ($1, $2) "
        "ON CONFLICT DO NOTHING RETURNING true",
        partner.id,
        digest,
    )
    if not first_time:
        raise SignatureReplayed("a request with this signature was already received; sign each request anew")
    return await _ingest(conn, rt, partner.id, ActionKind(partner.kind), records, "push", now)


async def claim(
    session: AsyncSession, rt: ActionsRuntime, resident_id: uuid.UUID, partner_id: uuid.UUID, external_id: str
) -> RecordResult:
    """A resident's claim: fetch the record from the partner, check it is theirs, decide it like a push.

    The partner is called before anything is written, and with no database connection held (see
    ``lookup_session``); the decision re-reads the links in the request's transaction.
    """
    async with lookup_session(session) as lookup:
        partner = await _partner(lookup, partner_id)
        refs = {link.partner_account_ref for link in await list_links(lookup, resident_id, partner_id)}
        endpoint, kind = _endpoint(rt, partner), ActionKind(partner.kind)
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
    conn = await raw_connection(session)
    [result] = await _ingest(conn, rt, partner_id, kind, [raw], "claim", _now())
    return result


async def _ingest(
    conn: asyncpg.Connection,
    rt: ActionsRuntime,
    partner_id: uuid.UUID,
    kind: ActionKind,
    raws: list[Any],
    source: str,
    now: datetime,
) -> list[RecordResult]:
    results: list[RecordResult | None] = [None] * len(raws)
    parsed: list[tuple[int, ActionRecord]] = []
    for index, raw in enumerate(raws):
        try:
            parsed.append((index, parse_record(kind, raw)))
        except InvalidRecord as exc:
            external = raw.get("external_id") if isinstance(raw, dict) else None
            results[index] = RecordResult(
                index,
                external if isinstance(external, str) and storable(external) else None,
                Outcome.REJECTED,
                reason=Reason.INVALID_RECORD.value,
                detail=exc.detail,
            )

    links = await _links_for(conn, partner_id, {r.account_ref for _, r in parsed})
    residents = sorted(set(links.values()))
    if residents:
        await conn.execute(
            "SELECT pg_advisory_xact_lock($1::int, k) FROM unnest($2::int[]) AS k ORDER BY k",
            RESIDENT_LOCK_CLASS,
            sorted({_resident_lock(r) for r in residents}),
        )
    ids = [action_id(partner_id, r.external_id) for _, r in parsed]
    existing = {
        row["id"]: row
        for row in await conn.fetch(EXISTING_ACTIONS, ids)
    }
    candidates = [(i, r) for i, r in parsed if r.account_ref in links]
    earlier = await _earlier_trips(
        conn,
        [links[r.account_ref] for _, r in candidates if r.kind is ActionKind.TRANSIT],
        [r for _, r in candidates if r.kind is ActionKind.TRANSIT],
    )
    days = {index: local_day(r.occurred_at, rt.local_offset) for index, r in candidates}
    usage = await _cap_usage(conn, residents, min(days.values(), default=None))
    allowance = await _anomaly_allowance(conn, rt, partner_id, now) if source == "push" else None

    decided: list[_Decided] = []
    seen: dict[uuid.UUID, ActionStatus] = {}
    for (index, record), aid in zip(parsed, ids, strict=True):
        if results[index] is not None:
            continue
        if aid in existing or aid in seen:
            row = existing.get(aid)
            results[index] = RecordResult(
                index,
                record.external_id,
                Outcome.DUPLICATE,
                action_id=aid,
                reason=row["reason"] if row else None,
                detail=f"already decided: {row['status'] if row else seen[aid].value}",
            )
            continue
        resident = links.get(record.account_ref)
        if resident is None:
            results[index] = RecordResult(
                index,
                record.external_id,
                Outcome.REJECTED,
                reason=Reason.ACCOUNT_NOT_LINKED.value,
                detail="no resident has linked this partner account",
            )
            continue
        assessment = assess(record, rt.methodologies, now, earlier[resident], rt.local_offset)
        item = _Decided(aid, record, raws[index], resident, days[index], ActionStatus.REJECTED, index=index)
        if not assessment.accepted:
            item.reason = assessment.reason
        elif allowance is not None and allowance <= 0:
            item.status, item.reason, item.reduction = (
                ActionStatus.PENDING_REVIEW,
                Reason.PARTNER_VOLUME_ANOMALY,
                assessment.reduction,
            )
        else:
            item.status, item.reduction = ActionStatus.CREDITED, assessment.reduction
            _apply_points(item, rt, usage)
        if allowance is not None:
            allowance -= 1
        if item.status is not ActionStatus.REJECTED and record.kind is ActionKind.TRANSIT:
            earlier[resident].add(record.trip())
        seen[aid] = item.status
        decided.append(item)

    inserted = await _insert_actions(conn, partner_id, source, decided, now)
    credited = [d for d in decided if d.id in inserted and d.status is ActionStatus.CREDITED]
    await _credit(conn, credited)
    if source == "push":
        await _count_volume(conn, partner_id, now, len(raws))
    for item in decided:
        if item.id not in inserted:
            # A concurrent submission decided the same record between our check and our insert.
            results[item.index] = RecordResult(
                item.index, item.record.external_id, Outcome.DUPLICATE, action_id=item.id, detail="already decided"
            )
        else:
            results[item.index] = _result(item)
    return [r for r in results if r is not None]


def _resident_lock(resident_id: uuid.UUID) -> int:
    return int.from_bytes(resident_id.bytes[:4], "big", signed=True)


@dataclass
class _CapUsage:
    """Points already credited per resident and kind, by local day and by month, kept current while deciding."""

    daily: defaultdict[tuple[uuid.UUID, str, date], int] = field(default_factory=lambda: defaultdict(int))
    monthly: defaultdict[tuple[uuid.UUID, str, date], int] = field(default_factory=lambda: defaultdict(int))

    def add(self, resident_id: uuid.UUID, kind: str, day: date, points: int) -> None:
        self.daily[(resident_id, kind, day)] += points
        self.monthly[(resident_id, kind, month_start(day))] += points


def _apply_points(item: _Decided, rt: ActionsRuntime, usage: _CapUsage) -> None:
    """Points for the reduction, within what the kind's daily and monthly caps leave; usage is updated."""
    assert item.reduction is not None
    kind = item.record.kind.value
    capped = apply_caps(
        points_for(item.reduction.grams_co2e, rt.points_per_kg),
        today=usage.daily[(item.resident_id, kind, item.day)],
        daily_cap=rt.caps.daily.get(kind, 0),
        this_month=usage.monthly[(item.resident_id, kind, month_start(item.day))],
        monthly_cap=rt.caps.monthly.get(kind, 0),
    )
    item.points, item.withheld, item.cap_reason = capped.credited, capped.cut, capped.reason
    usage.add(item.resident_id, kind, item.day, capped.credited)


def _result(item: _Decided) -> RecordResult:
    outcome = {
        ActionStatus.CREDITED: Outcome.CREDITED,
        ActionStatus.REJECTED: Outcome.REJECTED,
        ActionStatus.PENDING_REVIEW: Outcome.PENDING_REVIEW,
    }[item.status]
    reduction = item.reduction
    return RecordResult(
        item.index,
        item.record.external_id,
        outcome,
        action_id=item.id,
        reason=str(item.reason) if item.reason else None,
        grams_co2e=reduction.grams_co2e if reduction and item.status is ActionStatus.CREDITED else 0,
        points=item.points,
        points_withheld=item.withheld,
        cap_reason=item.cap_reason,
        methodology_id=reduction.methodology_id if reduction else None,
        methodology_version=reduction.methodology_version if reduction else None,
    )


async def _links_for(conn: asyncpg.Connection, partner_id: uuid.UUID, refs: set[str]) -> dict[str, uuid.UUID]:
    if not refs:
        return {}
    rows = await conn.fetch(
        "SELECT partner_account_ref, resident_id FROM partner_links "
        "WHERE partner_id = $1 AND partner_account_ref = ANY($2::text[]) AND unlinked_at IS NULL",
        partner_id,
        list(refs),
    )
    return {r["partner_account_ref"]: r["resident_id"] for r in rows}


async def _earlier_trips(
    conn: asyncpg.Connection, residents: list[uuid.UUID], records: list[ActionRecord]
) -> defaultdict[uuid.UUID, TripHistory]:
    """Credited and held trips of these residents that could overlap the submitted ones."""
    trips: defaultdict[uuid.UUID, TripHistory] = defaultdict(TripHistory)
    if not records:
        return trips
    start = min(r.started_at for r in records if r.started_at is not None)
    end = max(r.occurred_at for r in records)
    rows = await conn.fetch(
        EARLIER_TRIPS,
        sorted(set(residents)),
        start,
        end,
    )
    for r in rows:
        trips[r["resident_id"]].add(Trip(TransitMode(r["category"]), r["started_at"], r["occurred_at"], r["quantity"]))
    return trips


async def _cap_usage(conn: asyncpg.Connection, residents: list[uuid.UUID], earliest_day: date | None) -> _CapUsage:
    """Points already credited per resident, kind and local day, from the first month the submission touches."""
    usage = _CapUsage()
    if not residents or earliest_day is None:
        return usage
    rows = await conn.fetch(
        CAP_USAGE,
        sorted(set(residents)),
        month_start(earliest_day),
    )
    for r in rows:
        usage.add(r["resident_id"], r["kind"], r["local_day"], r["points"])
    return usage


def _hour(now: datetime) -> datetime:
    return now.replace(minute=0, second=0, microsecond=0)


async def _anomaly_allowance(conn: asyncpg.Connection, rt: ActionsRuntime, partner_id: uuid.UUID, now: datetime) -> int:
    """How many more records this partner may push this hour before the rest are held for review."""
    hour = _hour(now)
    rows = await conn.fetch(
        "SELECT hour, sum(records)::bigint AS records FROM partner_hourly_volume "
        "WHERE partner_id = $1 AND hour >= $2 GROUP BY hour",
        partner_id,
        hour - VOLUME_HISTORY,
    )
    this_hour = sum(r["records"] for r in rows if r["hour"] == hour)
    past = [r for r in rows if r["hour"] < hour]
    past_hours = int((hour - min(r["hour"] for r in past)).total_seconds() // 3600) if past else 0
    threshold = anomaly_threshold(
        sum(r["records"] for r in past), past_hours, factor=rt.anomaly_factor, floor=rt.anomaly_floor_per_hour
    )
    return threshold - this_hour


async def _count_volume(conn: asyncpg.Connection, partner_id: uuid.UUID, now: datetime, records: int) -> None:
    await conn.execute(
        "INSERT INTO partner_hourly_volume (partner_id, hour, slot, records) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (partner_id, hour, slot) DO UPDATE SET records = partner_hourly_volume.records + EXCLUDED.records",
        partner_id,
        _hour(now),
        conn.get_server_pid() % VOLUME_SLOTS,  # concurrent transactions rarely share a slot (see connection_slot)
        records,
    )


async def _insert_actions(
    conn: asyncpg.Connection, partner_id: uuid.UUID, source: str, decided: list[_Decided], now: datetime
) -> set[uuid.UUID]:
    if not decided:
        return set()
    columns: dict[str, list[Any]] = defaultdict(list)
    for d in decided:
        r, red = d.record, d.reduction
        columns["id"].append(d.id)
        columns["external_id"].append(r.external_id)
        columns["resident_id"].append(d.resident_id)
        columns["account_ref"].append(r.account_ref)
        columns["kind"].append(r.kind.value)
        columns["category"].append(r.category)
        columns["quantity"].append(r.quantity)
        columns["started_at"].append(r.started_at)
        columns["occurred_at"].append(r.occurred_at)
        columns["local_day"].append(d.day)
        columns["status"].append(d.status.value)
        columns["reason"].append(str(d.reason) if d.reason else None)
        columns["grams_co2e"].append(red.grams_co2e if red else 0)
        columns["points"].append(d.points)
        columns["points_withheld"].append(d.withheld)
        columns["cap_reason"].append(d.cap_reason)
        columns["methodology_id"].append(red.methodology_id if red else None)
        columns["methodology_version"].append(red.methodology_version if red else None)
        columns["factor"].append(str(red.factor) if red else None)
        columns["record"].append(json.dumps(d.raw))  # jsonb orders the keys itself
        columns["decided_at"].append(None if d.status is ActionStatus.PENDING_REVIEW else now)
    rows = await conn.fetch(
        """
        INSERT INTO actions (id, partner_id, source, external_id, resident_id, account_ref, kind, category, quantity,
            started_at, occurred_at, local_day, status, reason, grams_co2e, points, points_withheld, cap_reason,
            methodology_id, methodology_version, factor, record, decided_at)
        SELECT u.id, $1, $2, u.external_id, u.resident_id, u.account_ref, u.kind, u.category, u.quantity,
            u.started_at, u.occurred_at, u.local_day, u.status, u.reason, u.grams_co2e, u.points, u.points_withheld,
            u.cap_reason, u.methodology_id, u.methodology_version, u.factor, u.record::jsonb, u.decided_at
        FROM unnest($3::uuid[], $4::text[], $5::uuid[], $6::text[], $7::text[], $8::text[], $9::bigint[],
            $10::timestamptz[], $11::timestamptz[], $12::date[], $13::text[], $14::text[], $15::bigint[],
            $16::bigint[], $17::bigint[], $18::text[], $19::text[], $20::int[], $21::text[], $22::text[],
            $23::timestamptz[])
            AS u(id, external_id, resident_id, account_ref, kind, category, quantity, started_at, occurred_at,
                 local_day, status, reason, grams_co2e, points, points_withheld, cap_reason, methodology_id,
                 methodology_version, factor, record, decided_at)
        ORDER BY u.id
        ON CONFLICT DO NOTHING
        RETURNING id
        """,
        partner_id,
        source,
        *(
            columns[name]
            for name in (
                "id",
                "external_id",
                "resident_id",
                "account_ref",
                "kind",
                "category",
                "quantity",
                "started_at",
                "occurred_at",
                "local_day",
                "status",
                "reason",
                "grams_co2e",
                "points",
                "points_withheld",
                "cap_reason",
                "methodology_id",
                "methodology_version",
                "factor",
                "record",
                "decided_at",
            )
        ),
    )
    return {r["id"] for r in rows}


def credit_transfers(action: uuid.UUID, resident_id: uuid.UUID, reduction: Reduction, points: int) -> list[NewTransfer]:
    """The linked transfers crediting one action; their ids derive from the action, so a retry cannot credit twice."""
    metadata = {
        "methodology": reduction.methodology_id,
        "methodology_version": reduction.methodology_version,
        "category": reduction.category,
        "factor": str(reduction.factor),
        "quantity": reduction.quantity,
        "grams_co2e": reduction.grams_co2e,
    }
    reference = f"action:{action}"
    co2e = NewTransfer(
        id=uuid.uuid5(action, "co2e"),
        debit_account_id=resident_carbon_account(resident_id).id,
        credit_account_id=CARBON_POOL.id,
        amount=reduction.grams_co2e,
        ledger=LedgerUnit.CO2E_G,
        code=TransferCode.ACTION_CREDIT,
        reference=reference,
        metadata=metadata,
        linked=points > 0,
    )
    if points <= 0:
        return [co2e]
    return [
        co2e,
        NewTransfer(
            id=uuid.uuid5(action, "points"),
            debit_account_id=ISSUANCE_POINTS.id,
            credit_account_id=resident_points_account(resident_id).id,
            amount=points,
            ledger=LedgerUnit.POINTS,
            code=TransferCode.ACTION_CREDIT,
            reference=reference,
            metadata=metadata,
        ),
    ]


async def _credit(conn: asyncpg.Connection, credited: list[_Decided]) -> None:
    if not credited:
        return
    residents = {d.resident_id for d in credited}
    accounts = [*SYSTEM_ACCOUNTS, *(f(r) for r in residents for f in (resident_points_account, resident_carbon_account))]
    transfers = [t for d in credited for t in credit_transfers(d.id, d.resident_id, d.reduction, d.points)]  # type: ignore[arg-type]
    try:
        outcomes = await apply_in_transaction(conn, transfers, accounts=accounts)
    except LedgerConflict as exc:
        raise LedgerBusy("a conflicting ledger write won; retry the request", headers={"Retry-After": "1"}) from exc
    refused = [o for o in outcomes if not o.applied]
    if refused:
        raise CreditFailed(f"the ledger refused transfer {refused[0].id}: {refused[0].result.value}")


# --------------------------------------------------------------------------------------------- reviews


async def pending_reviews(session: AsyncSession, limit: int) -> Sequence[Action]:
    return (
        await session.scalars(
            select(Action)
            .where(Action.status == ActionStatus.PENDING_REVIEW.value)
            .order_by(Action.received_at, Action.id)  # type: ignore[arg-type]
            .limit(limit)
        )
    ).all()


async def decide_review(
    session: AsyncSession,
    rt: ActionsRuntime,
    actor: Principal,
    action_id_: uuid.UUID,
    approve: bool,
    reason: str,
    meta: RequestMeta,
) -> Action:
    """Approve (credit now, within the caps as they stand) or reject an action held for review."""
    conn = await raw_connection(session)
    row = await conn.fetchrow("SELECT resident_id, status FROM actions WHERE id = $1", action_id_)
    if row is None:
        raise ActionNotFound(f"no action {action_id_}")
    await conn.execute(
        "SELECT pg_advisory_xact_lock($1::int, $2::int)", RESIDENT_LOCK_CLASS, _resident_lock(row["resident_id"])
    )
    action = (
        await session.scalars(
            select(Action).where(Action.id == action_id_).with_for_update().execution_options(populate_existing=True)
        )
    ).one()
    if action.status != ActionStatus.PENDING_REVIEW.value:
        raise AlreadyReviewed(f"this action is {action.status}")
    now = _now()
    if approve:
        methodology = rt.methodologies.get(action.methodology_id or "", action.methodology_version or 0)
        reduction = methodology.reduction(action.category, action.quantity)
        record = ActionRecord(
            action.external_id,
            action.account_ref,
            ActionKind(action.kind),
            action.category,
            action.quantity,
            action.occurred_at,
            action.started_at,
        )
        item = _Decided(
            action.id,
            record,
            action.record,
            action.resident_id,
            action.local_day,
            ActionStatus.CREDITED,
            reduction=reduction,
        )
        _apply_points(item, rt, await _cap_usage(conn, [action.resident_id], action.local_day))
        await _credit(conn, [item])
        action.status, action.reason = ActionStatus.CREDITED.value, None
        action.points, action.points_withheld, action.cap_reason = item.points, item.withheld, item.cap_reason
    else:
        action.status, action.reason = ActionStatus.REJECTED.value, Reason.REJECTED_BY_OPERATOR.value
    action.decided_at = now
    await conn.execute(
        "INSERT INTO action_reviews (action_id, operator_id, decision, reason) VALUES ($1, $2, $3, $4)",
        action.id,
        actor.subject_id,
        "approve" if approve else "reject",
        reason,
    )
    await record_operator_action(
        session,
        actor,
        "action.review",
        "action",
        str(action.id),
        {"decision": "approve" if approve else "reject", "reason": reason},
        meta,
    )
    await session.flush()
    return action


# ------------------------------------------------------------------------------------- resident views


@dataclass(frozen=True)
class ResidentBalance:
    points_available: int
    points_held: int
    points_earned: int
    points_spent: int
    co2e_avoided_g: int


async def balance(session: AsyncSession, resident_id: uuid.UUID) -> ResidentBalance:
    points_account, carbon_account = resident_points_account(resident_id), resident_carbon_account(resident_id)
    balances = await get_balances(await raw_connection(session), [points_account.id, carbon_account.id])
    points = balances.get(points_account.id)
    carbon = balances.get(carbon_account.id)
    return ResidentBalance(
        points_available=points.available_credit if points else 0,
        points_held=points.debits_pending if points else 0,
        points_earned=points.credits_posted if points else 0,
        points_spent=points.debits_posted if points else 0,
        co2e_avoided_g=(carbon.debits_posted - carbon.credits_posted) if carbon else 0,
    )


@dataclass(frozen=True)
class Page:
    items: list[Any]
    next_cursor: str | None


def encode_cursor(at: datetime, item_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(f"{at.isoformat()}|{item_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> tuple[datetime, uuid.UUID] | None:
    if not cursor:
        return None
    try:
        at, _, item = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().partition("|")
        return datetime.fromisoformat(at), uuid.UUID(item)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidInput("the cursor is not one this service issued", field="cursor") from None


async def resident_actions(session: AsyncSession, resident_id: uuid.UUID, cursor: str | None, limit: int) -> Page:
    query = select(Action).where(Action.resident_id == resident_id)
    after = decode_cursor(cursor)
    if after is not None:
        query = query.where(tuple_(Action.received_at, Action.id) < tuple_(*after))
    rows = (
        await session.scalars(query.order_by(Action.received_at.desc(), Action.id.desc()).limit(limit + 1))  # type: ignore[attr-defined]
    ).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(list(rows), encode_cursor(rows[-1].received_at, rows[-1].id) if more else None)


@dataclass(frozen=True)
class StatementLine:
    transfer_id: uuid.UUID
    timestamp: datetime
    ledger: str
    code: str
    amount: int
    direction: str
    reference: str | None
    pending: bool


async def statement(session: AsyncSession, resident_id: uuid.UUID, cursor: str | None, limit: int) -> Page:
    """The resident's ledger entries (points and grams CO₂e), newest first."""
    accounts = [resident_points_account(resident_id).id, resident_carbon_account(resident_id).id]
    after = decode_cursor(cursor)
    entries = await account_entries(
        await raw_connection(session), accounts, **({"before": after} if after else {}), limit=limit + 1
    )
    lines = [
        StatementLine(
            transfer_id=e.transfer_id,
            timestamp=e.timestamp,
            ledger=e.ledger,
            code=e.code,
            amount=e.amount,
            direction="credit" if e.credit else "debit",
            reference=e.reference,
            pending=e.pending,
        )
        for e in entries[:limit]
    ]
    more = len(entries) > limit
    return Page(lines, encode_cursor(lines[-1].timestamp, lines[-1].transfer_id) if more else None)


@dataclass(frozen=True)
class Impact:
    total_g: int
    by_kind: dict[str, int]
    by_month: list[tuple[str, str, int]] = field(default_factory=list)


async def impact(session: AsyncSession, resident_id: uuid.UUID) -> Impact:
    """Grams CO₂e avoided by the resident's credited actions: in total, by kind, by month and kind."""
    rows = await (await raw_connection(session)).fetch(
        "SELECT to_char(local_day, 'YYYY-MM') AS month, kind, sum(grams_co2e)::bigint AS grams FROM actions "
        "WHERE resident_id = $1 AND status = 'credited' GROUP BY 1, 2 ORDER BY 1, 2",
        resident_id,
    )
    by_kind: dict[str, int] = defaultdict(int)
    for r in rows:
        by_kind[r["kind"]] += r["grams"]
    return Impact(sum(by_kind.values()), dict(by_kind), [(r["month"], r["kind"], r["grams"]) for r in rows])
