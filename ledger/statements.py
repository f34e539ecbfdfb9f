"""Account statements: the entries of a set of accounts, newest first, a page at a time.

A statement is read straight from the transfers, not from the balance projection, so every line is
a transfer anyone can find in the Merkle log. Pages are keyed by ``(timestamp, id)``: stable while
transfers are appended, since a new transfer is always later than the page a reader holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

import asyncpg

#: Where a statement starts when no page was read yet: after every possible entry.
START = (datetime.max.replace(tzinfo=UTC), UUID(int=2**128 - 1))

# Newest first, per account and side, each from its (account, timestamp) index; the outer query
# merges them. The callers' account sets hold at most one side of any transfer (a resident's points
# and carbon accounts are on different ledgers), so no transfer is listed twice.
ACCOUNT_ENTRIES = """
    SELECT t.id, t.timestamp, t.ledger, t.code, t.amount, t.reference, t.pending, t.void_pending,
           t.post_pending, t.credit_account_id = ANY($1::uuid[]) AS credit
    FROM unnest($1::uuid[]) AS a(id)
    CROSS JOIN LATERAL (
        (SELECT * FROM ledger_transfers
         WHERE debit_account_id = a.id AND (timestamp, id) < ($2::timestamptz, $3::uuid)
         ORDER BY timestamp DESC, id DESC LIMIT $4::int)
        UNION ALL
        (SELECT * FROM ledger_transfers
         WHERE credit_account_id = a.id AND (timestamp, id) < ($2::timestamptz, $3::uuid)
         ORDER BY timestamp DESC, id DESC LIMIT $4::int)
    ) AS t
    ORDER BY t.timestamp DESC, t.id DESC
    LIMIT $4::int
"""


@dataclass(frozen=True, slots=True)
class Entry:
    """One transfer as seen from the statement's accounts: ``credit`` says which side they are on."""

    transfer_id: UUID
    timestamp: datetime
    ledger: str
    code: str
    amount: int
    reference: str | None
    pending: bool
    credit: bool


async def account_entries(
    conn: asyncpg.Connection,
    account_ids: Sequence[UUID],
    *,
    before: tuple[datetime, UUID] | None = None,
    limit: int,
) -> list[Entry]:
    """Up to ``limit`` entries of ``account_ids``, newest first, older than ``before`` (a ``(timestamp,
    transfer id)``, the last entry of the previous page) when it is given."""
    at, transfer_id = before or START
    rows = await conn.fetch(ACCOUNT_ENTRIES, list(account_ids), at, transfer_id, limit)
    return [
        Entry(r["id"], r["timestamp"], r["ledger"], r["code"], r["amount"], r["reference"], r["pending"], r["credit"])
        for r in rows
    ]


# Posted effects only: a pending transfer or a void moves no posted balance; a post moves its amount.
# Each side is read from its (account, timestamp) index; $4, when given, keeps only those codes.
POSTED_MOVEMENTS = """
    SELECT
        coalesce((SELECT sum(amount) FROM ledger_transfers
                  WHERE debit_account_id = $1::uuid AND timestamp >= $2::timestamptz AND timestamp < $3::timestamptz
                    AND NOT pending AND NOT void_pending AND ($4::text[] IS NULL OR code = ANY($4))), 0)::bigint
            AS debits,
        coalesce((SELECT sum(amount) FROM ledger_transfers
                  WHERE credit_account_id = $1::uuid AND timestamp >= $2::timestamptz AND timestamp < $3::timestamptz
                    AND NOT pending AND NOT void_pending AND ($4::text[] IS NULL OR code = ANY($4))), 0)::bigint
            AS credits
"""


@dataclass(frozen=True, slots=True)
class Movements:
    """How much an account's posted debits and credits grew over a period."""

    debits: int
    credits: int

    @property
    def net_credit(self) -> int:
        return self.credits - self.debits


async def posted_movements(
    conn: asyncpg.Connection, account_id: UUID, start: datetime, end: datetime, codes: Sequence[str] | None = None
) -> Movements:
    """Posted debits and credits of ``account_id`` by transfers timestamped in ``[start, end)`` (of ``codes``)."""
    row = await conn.fetchrow(POSTED_MOVEMENTS, account_id, start, end, list(codes) if codes is not None else None)
    return Movements(row["debits"], row["credits"])
