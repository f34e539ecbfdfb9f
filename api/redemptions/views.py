"""Reading redemptions: a resident's own (with the code while it is held), a merchant's, and the
merchant's statement of a period, as JSON pages or streamed as CSV in constant memory."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.database import raw_connection
from api.pagination import Page, decode_cursor, page_of
from api.redemptions import repository
from api.redemptions.errors import InvalidPeriod, RedemptionNotFound
from api.redemptions.models import Redemption
from api.redemptions.runtime import RedemptionsRuntime
from domain.redemptions import RedemptionStatus, display_code
from ledger import merchant_points_account, posted_movements


def _created(r: Redemption) -> tuple[datetime, uuid.UUID]:
    return r.created_at, r.id


def code_of(rt: RedemptionsRuntime, redemption: Redemption) -> str | None:
    """The code to show its resident: only while the redemption is held."""
    if redemption.status != RedemptionStatus.HELD:
        return None
    return display_code(rt.secret.unseal(redemption.code_sealed))


async def resident_redemptions(
    session: AsyncSession, resident_id: uuid.UUID, cursor: str | None, limit: int
) -> Page[Redemption]:
    rows = await repository.resident_redemptions(session, resident_id, decode_cursor(cursor), limit + 1)
    return page_of(rows, limit, _created)


async def resident_redemption(session: AsyncSession, resident_id: uuid.UUID, redemption_id: uuid.UUID) -> Redemption:
    redemption = await session.get(Redemption, redemption_id)
    if redemption is None or redemption.resident_id != resident_id:
        raise RedemptionNotFound(f"no redemption {redemption_id}")
    return redemption


async def merchant_redemptions(
    session: AsyncSession,
    merchant_id: uuid.UUID,
    *,
    status: str | None,
    offer_id: uuid.UUID | None,
    created_from: datetime | None,
    created_to: datetime | None,
    cursor: str | None,
    limit: int,
) -> Page[Redemption]:
    rows = await repository.merchant_redemptions(
        session,
        merchant_id,
        status=status,
        offer_id=offer_id,
        created_from=created_from,
        created_to=created_to,
        after=decode_cursor(cursor),
        limit=limit + 1,
    )
    return page_of(rows, limit, _created)


@dataclass(frozen=True)
class Line:
    redemption_id: uuid.UUID
    offer_id: uuid.UUID
    event: str
    points: int
    at: datetime


@dataclass(frozen=True)
class Statement:
    """A merchant's redemptions over ``[start, end)``: one page of lines, and the whole period's totals.

    ``ledger_net_points`` is the merchant's points account's posted movement over the same period, read
    from the ledger: captures credit it and refunds debit it, so it equals ``net_points``.
    """

    start: datetime
    end: datetime
    lines: Page[Line]
    totals: dict[str, tuple[int, int]]
    net_points: int
    ledger_net_points: int


def _check_period(start: datetime, end: datetime) -> None:
    if not start < end:
        raise InvalidPeriod("`from` must be earlier than `to`", field="from")


async def statement(
    session: AsyncSession, merchant_id: uuid.UUID, start: datetime, end: datetime, cursor: str | None, limit: int
) -> Statement:
    _check_period(start, end)
    conn = await raw_connection(session)
    after = decode_cursor(cursor) or repository.STATEMENT_START
    rows = await conn.fetch(repository.STATEMENT_LINES + " LIMIT $6", merchant_id, start, end, *after, limit + 1)
    lines = [Line(r["id"], r["offer_id"], r["event"], r["points"], r["at"]) for r in rows]
    totals = await repository.statement_totals(conn, merchant_id, start, end)
    movements = await posted_movements(conn, merchant_points_account(merchant_id).id, start, end)
    return Statement(
        start,
        end,
        page_of(lines, limit, lambda line: (line.at, line.redemption_id)),
        totals,
        _net(totals),
        movements.net_credit,
    )


def _net(totals: dict[str, tuple[int, int]]) -> int:
    return totals.get("captured", (0, 0))[1] - totals.get("refunded", (0, 0))[1]


CSV_COLUMNS = ("row", "redemption_id", "offer_id", "event", "count", "points", "at")


async def statement_csv(
    sessionmaker: async_sessionmaker[AsyncSession], merchant_id: uuid.UUID, start: datetime, end: datetime
) -> AsyncIterator[bytes]:
    """The statement as CSV: a ``line`` row per event, then ``total`` rows per event and the net.

    Rows are read through a server-side cursor (one statement: one snapshot) and written as they come,
    on a connection of its own (the request's transaction ends before a streamed body is sent).
    """
    _check_period(start, end)

    async def rows() -> AsyncIterator[bytes]:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")

        def flush() -> bytes:
            data = buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
            return data

        writer.writerow(CSV_COLUMNS)
        totals: dict[str, tuple[int, int]] = {}
        async with sessionmaker() as session, session.begin():
            conn = await raw_connection(session)
            cursor = conn.cursor(repository.STATEMENT_LINES, merchant_id, start, end, *repository.STATEMENT_START)
            async for r in cursor:
                writer.writerow(("line", r["id"], r["offer_id"], r["event"], 1, r["points"], r["at"].isoformat()))
                count, points = totals.get(r["event"], (0, 0))
                totals[r["event"]] = (count + 1, points + r["points"])
                if buffer.tell() > 64 * 1024:
                    yield flush()
        for event in repository.STATEMENT_EVENTS:
            count, points = totals.get(event, (0, 0))
            writer.writerow(("total", "", "", event, count, points, ""))
        writer.writerow(("total", "", "", "net", "", _net(totals), ""))
        yield flush()

    return rows()
