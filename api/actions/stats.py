"""Reductions over a period, for operators: grams CO₂e avoided, actions and points, grouped.

A credit counts when it was written to the ledger (an action's ``decided_at`` is its credit's ledger
timestamp) and a reversal when it was written, as a negative amount: so the grams of a period are the
carbon pool's ``action_credit`` credits less its ``reversal`` debits over the same period, to the gram,
and the points are those issued less those reversed.
Days and months are the programme's (``CARBON_UTC_OFFSET_MINUTES``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy.ext.asyncio import AsyncSession

from api.database import raw_connection


class GroupBy(StrEnum):
    KIND = "kind"
    DAY = "day"
    MONTH = "month"
    PARTNER = "partner"
    METHODOLOGY = "methodology"


_LOCAL = "((e.at AT TIME ZONE 'UTC') + make_interval(mins => $3::int))"
_KEYS = {
    GroupBy.KIND: "e.kind",
    GroupBy.DAY: f"to_char({_LOCAL}, 'YYYY-MM-DD')",
    GroupBy.MONTH: f"to_char({_LOCAL}, 'YYYY-MM')",
    GroupBy.PARTNER: "e.partner_id::text",
    GroupBy.METHODOLOGY: "e.methodology_id || ' v' || e.methodology_version",
}
_EVENTS = """
    SELECT a.kind, a.partner_id, a.methodology_id, a.methodology_version, a.decided_at AS at,
           a.grams_co2e AS grams, a.points, 1 AS credited, 0 AS reversed
    FROM actions AS a
    WHERE a.status IN ('credited', 'reversed') AND a.decided_at >= $1::timestamptz AND a.decided_at < $2::timestamptz
    UNION ALL
    SELECT a.kind, a.partner_id, a.methodology_id, a.methodology_version, r.reversed_at,
           -r.grams_co2e, -r.points, 0, 1
    FROM action_reversals AS r JOIN actions AS a ON a.id = r.action_id
    WHERE r.reversed_at >= $1::timestamptz AND r.reversed_at < $2::timestamptz
"""


@dataclass(frozen=True)
class ReductionGroup:
    key: str
    grams_co2e: int
    actions_credited: int
    actions_reversed: int
    points_issued: int


async def reductions(
    session: AsyncSession, group_by: GroupBy, start: datetime, end: datetime, local_offset: timedelta
) -> list[ReductionGroup]:
    local = (int(local_offset.total_seconds() // 60),) if group_by in (GroupBy.DAY, GroupBy.MONTH) else ()
    rows = await (await raw_connection(session)).fetch(
        f"""
        SELECT {_KEYS[group_by]} AS key, sum(e.grams)::bigint AS grams, sum(e.credited)::bigint AS credited,
               sum(e.reversed)::bigint AS reversed, sum(e.points)::bigint AS points
        FROM ({_EVENTS}) AS e
        GROUP BY 1 ORDER BY 1
        """,
        start,
        end,
        *local,
    )
    return [ReductionGroup(r["key"], r["grams"], r["credited"], r["reversed"], r["points"]) for r in rows]
