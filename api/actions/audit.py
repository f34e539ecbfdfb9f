"""The cross-check an audit of the ledger adds for actions: credits and actions agree one for one.

Every action that was credited (``credited``, or ``reversed`` since) must have its ``action_credit``
transfers, and every ``action_credit`` transfer must name such an action: a row marked credited with
no credit behind it, or a credit with no decided action, is what a tamperer with database access
would leave. Both sides are read in one snapshot and compared as two sorted streams, so memory stays
flat however long the ledger is.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg

from ledger import TransferCode, VerifyReport, references_with_code

_CREDITED_ACTIONS = """
    SELECT 'action:' || id::text AS reference FROM actions
    WHERE status IN ('credited', 'reversed') ORDER BY 1
"""


async def _credited(conn: asyncpg.Connection) -> AsyncIterator[str]:
    async for row in conn.cursor(_CREDITED_ACTIONS, prefetch=2000):
        yield row["reference"]


async def _next(stream: AsyncIterator[str]) -> str | None:
    return await anext(stream, None)


async def check_credits_match_actions(conn: asyncpg.Connection, report: VerifyReport) -> None:
    """Add the first mismatch between credited actions and credit transfers to ``report``, with counts."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        actions, credits = _credited(conn), references_with_code(conn, TransferCode.ACTION_CREDIT.value)
        action, credit = await _next(actions), await _next(credits)
        missing = orphans = 0
        first: tuple[str, str] | None = None
        while action is not None or credit is not None:
            if credit is None or (action is not None and action < credit):
                missing += 1
                first = first or ("credited_action_without_transfers", action or "")
                action = await _next(actions)
            elif action is None or credit < action:
                orphans += 1
                first = first or ("credit_without_action", credit)
                credit = await _next(credits)
            else:
                action, credit = await _next(actions), await _next(credits)
    if first is None:
        return
    kind, reference = first
    what = reference.removeprefix("action:")
    if kind == "credited_action_without_transfers":
        detail = f"action {what} is marked credited but no action_credit transfer names it"
    else:
        detail = f"an action_credit transfer names action {what}, which is not a credited action"
    report.add(
        kind,
        f"{detail} (first of {missing} credited actions without transfers and {orphans} credits without actions)",
    )
