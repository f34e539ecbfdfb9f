"""The background job that expires held redemptions whose code ran out, and returns their stock.

The ledger's own expiry task voids expired holds too; both write the same void, so whichever comes
second finds it written. Each round is one short transaction over at most ``BATCH`` redemptions,
taken with ``SKIP LOCKED``: several workers' jobs share the work, and a capture or void holding a
row is never waited for.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.redemptions.redeeming import expire_due
from ledger import PeriodicTask

BATCH = 200


def expiry_task(sessionmaker: async_sessionmaker[AsyncSession], interval_s: float) -> PeriodicTask:
    async def expire_round() -> bool:
        async with sessionmaker() as session, session.begin():
            expired = await expire_due(session, BATCH)
        return expired == BATCH

    return PeriodicTask("redemption-expiry", expire_round, interval_s)
