"""Reading the ledger as an auditor does: transfers in log order, accounts of an owner, balances as of
a past moment, and statements with the running balance after every entry.

Transfers are listed by their Merkle log position, the one order that never changes: a transfer gets
the next position once its transaction has committed and every older one has ended, so a page keyed
by position is never overtaken by a late commit (nothing skipped or repeated while transfers are
appended). A transfer appears there once sealed, within ``CARBON_SEAL_POLL_INTERVAL_S`` of its commit.
Balances and statements are about time instead: they follow the transfers' timestamps.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

import asyncpg

from ledger.account_store import SELECT_ACCOUNTS, account_from_row
from ledger.engine import balance_effects, bump_balance
from ledger.store import transfer_columns, transfer_from_row
from ledger.types import Account, Balance, Transfer

_LAST_ID = UUID(int=2**128 - 1)

# The balance rule of ``engine.balance_effects`` for one account ($1), in SQL, over its transfers up to
# the key ($2, $3): a post or void takes back the pending amount it resolves.
_EFFECTS_UP_TO = """
    SELECT
        coalesce(sum(CASE WHEN t.pending THEN t.amount WHEN t.post_pending OR t.void_pending THEN -p.amount ELSE 0 END)
                 FILTER (WHERE t.debit_account_id = $1), 0)::bigint AS dp,
        coalesce(sum(t.amount) FILTER (WHERE t.debit_account_id = $1 AND NOT t.pending AND NOT t.void_pending), 0)::bigint
            AS dpo,
        coalesce(sum(CASE WHEN t.pending THEN t.amount WHEN t.post_pending OR t.void_pending THEN -p.amount ELSE 0 END)
                 FILTER (WHERE t.credit_account_id = $1), 0)::bigint AS cp,
        coalesce(sum(t.amount) FILTER (WHERE t.credit_account_id = $1 AND NOT t.pending AND NOT t.void_pending), 0)::bigint
            AS cpo
    FROM ((SELECT * FROM ledger_transfers
           WHERE debit_account_id = $1::uuid AND (timestamp, id) <= ($2::timestamptz, $3::uuid))
          UNION ALL
          (SELECT * FROM ledger_transfers
           WHERE credit_account_id = $1::uuid AND (timestamp, id) <= ($2::timestamptz, $3::uuid))) AS t
    LEFT JOIN LATERAL (SELECT amount FROM ledger_transfers WHERE id = t.pending_id OFFSET 0) AS p ON true
"""
_STATEMENT_PAGE = f"""
    SELECT {transfer_columns("t")}, p.amount AS pending_amount, l.position
    FROM ledger_transfers AS t
    LEFT JOIN ledger_transfers AS p ON p.id = t.pending_id
    LEFT JOIN ledger_log AS l ON l.transfer_id = t.id
    WHERE (t.debit_account_id = $1::uuid OR t.credit_account_id = $1::uuid)
      AND (t.timestamp, t.id) > ($2::timestamptz, $3::uuid) AND t.timestamp <= $4::timestamptz
    ORDER BY t.timestamp, t.id
    LIMIT $5::int
"""


@dataclass(frozen=True, slots=True)
class SealedTransfer:
    position: int
    transfer: Transfer


@dataclass(frozen=True, slots=True)
class RunningEntry:
    """One transfer of an account's statement, with the account's balance just after it."""

    transfer: Transfer
    position: int | None
    balance: Balance


def sealed_page_sql(
    *,
    account_ids: bool = False,
    ledger: bool = False,
    code: bool = False,
    reference: bool = False,
    start: bool = False,
    end: bool = False,
    after_position: bool = False,
    newest_first: bool = True,
) -> str:
    """The query of a page of sealed transfers with the given filters; its parameters come in this
    signature's order, the limit last."""
    conditions = [
        condition
        for wanted, condition in (
            (account_ids, "(t.debit_account_id = ANY($?::uuid[]) OR t.credit_account_id = ANY($?::uuid[]))"),
            (ledger, "t.ledger = $?::text"),
            (code, "t.code = $?::text"),
            (reference, "t.reference = $?::text"),
            (start, "t.timestamp >= $?::timestamptz"),
            (end, "t.timestamp < $?::timestamptz"),
            (after_position, f"l.position {'<' if newest_first else '>'} $?::bigint"),
        )
        if wanted
    ]
    numbered = [c.replace("$?", f"${n}") for n, c in enumerate(conditions, 1)]
    return f"""
        SELECT l.position, {transfer_columns("t")}
        FROM ledger_log AS l JOIN ledger_transfers AS t ON t.id = l.transfer_id
        {"WHERE " + " AND ".join(numbered) if numbered else ""}
        ORDER BY l.position {"DESC" if newest_first else "ASC"}
        LIMIT ${len(numbered) + 1}::int
    """


async def sealed_transfers(
    conn: asyncpg.Connection,
    *,
    account_ids: Sequence[UUID] | None = None,
    ledger: str | None = None,
    code: str | None = None,
    reference: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    after_position: int | None = None,
    newest_first: bool = True,
    limit: int,
) -> list[SealedTransfer]:
    """Sealed transfers matching every filter given, by log position (newest first unless told otherwise).

    ``account_ids``: on either side; ``start``/``end``: the transfer's timestamp in ``[start, end)``;
    ``after_position``: the last position of the previous page.
    """
    filters = {
        "account_ids": list(account_ids) if account_ids is not None else None,
        "ledger": ledger,
        "code": code,
        "reference": reference,
        "start": start,
        "end": end,
        "after_position": after_position,
    }
    given = {name: value for name, value in filters.items() if value is not None}
    sql = sealed_page_sql(newest_first=newest_first, **{name: True for name in given})
    rows = await conn.fetch(sql, *given.values(), limit)
    return [SealedTransfer(r["position"], transfer_from_row(r)) for r in rows]


async def find_transfers(conn: asyncpg.Connection, ids: Sequence[UUID]) -> list[tuple[Transfer, int | None]]:
    """The transfers among ``ids`` that exist, each with its log position (None until sealed), by timestamp."""
    rows = await conn.fetch(
        f"""
        SELECT {transfer_columns("t")}, l.position FROM unnest($1::uuid[]) AS k(id)
        CROSS JOIN LATERAL (SELECT * FROM ledger_transfers WHERE id = k.id OFFSET 0) AS t
        LEFT JOIN ledger_log AS l ON l.transfer_id = t.id
        ORDER BY t.timestamp, t.id
        """,
        list(ids),
    )
    return [(transfer_from_row(r), r["position"]) for r in rows]


async def accounts_of(conn: asyncpg.Connection, owner_refs: Sequence[str]) -> list[Account]:
    """The accounts whose owner is one of ``owner_refs`` (``resident:<id>``, ``merchant:<id>``, …)."""
    rows = await conn.fetch("SELECT id FROM ledger_accounts WHERE owner_ref = ANY($1::text[])", list(owner_refs))
    found = await conn.fetch(SELECT_ACCOUNTS, [r["id"] for r in rows])
    return sorted((account_from_row(r) for r in found), key=lambda a: (a.ledger, a.code))


async def balance_at(conn: asyncpg.Connection, account_id: UUID, at: datetime) -> Balance:
    """The account's balance from its transfers timestamped at or before ``at``."""
    return await _balance_up_to(conn, account_id, at, _LAST_ID)


async def _balance_up_to(conn: asyncpg.Connection, account_id: UUID, at: datetime, last_id: UUID) -> Balance:
    row = await conn.fetchrow(_EFFECTS_UP_TO, account_id, at, last_id)
    return Balance(row["dp"], row["dpo"], row["cp"], row["cpo"])


async def running_statement(
    conn: asyncpg.Connection,
    account_id: UUID,
    *,
    after: tuple[datetime, UUID] | None = None,
    until: datetime | None = None,
    limit: int,
) -> list[RunningEntry]:
    """The account's transfers in time order after ``after`` (a page's last ``(timestamp, id)``) and up to
    ``until``, each with the balance just after it."""
    start_at, start_id = after or (datetime.min.replace(tzinfo=UTC), UUID(int=0))
    balance = await _balance_up_to(conn, account_id, start_at, start_id) if after else Balance()
    rows = await conn.fetch(
        _STATEMENT_PAGE, account_id, start_at, start_id, until or datetime.max.replace(tzinfo=UTC), limit
    )
    entries = []
    for r in rows:
        transfer = transfer_from_row(r)
        for affected, index, delta in balance_effects(transfer, r["pending_amount"] or 0):
            if affected == account_id:
                bump_balance(balance, index, delta)
        entries.append(RunningEntry(transfer, r["position"], Balance(*balance.as_tuple())))
    return entries


async def references_with_code(conn: asyncpg.Connection, code: str) -> AsyncIterator[str]:
    """Every distinct ``reference`` of the transfers with ``code``, in order (for cross-checks against the
    records that caused them; run inside the caller's snapshot)."""
    statement = "SELECT DISTINCT reference FROM ledger_transfers WHERE code = $1 AND reference IS NOT NULL ORDER BY 1"
    async for row in conn.cursor(statement, code, prefetch=2000):
        yield row["reference"]
