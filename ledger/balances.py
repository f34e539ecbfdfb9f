"""Balances: read them, rebuild them from the transfers, and total them per ledger.

The stored balances are a projection of the transfers, written in the same transaction; these
functions read it (``get_balances``) and check it (``recompute_balances``, ``ledger_totals``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from uuid import UUID

import asyncpg

from ledger.errors import require_transaction
from ledger.types import Balance, BalanceDrift, RecomputeReport


async def get_balances(conn: asyncpg.Connection, account_ids: Iterable[UUID]) -> dict[UUID, Balance]:
    """Current balances (sum of the striped slots) of existing accounts."""
    rows = await conn.fetch(
        """
        SELECT k.id AS account_id, s.dp, s.dpo, s.cp, s.cpo FROM unnest($1::uuid[]) AS k(id)
        CROSS JOIN LATERAL (
            SELECT count(*) AS slots, sum(debits_pending)::bigint AS dp, sum(debits_posted)::bigint AS dpo,
                   sum(credits_pending)::bigint AS cp, sum(credits_posted)::bigint AS cpo
            FROM ledger_balances WHERE account_id = k.id OFFSET 0
        ) AS s
        WHERE s.slots > 0
        """,
        list(set(account_ids)),
    )
    return {r["account_id"]: Balance(r["dp"], r["dpo"], r["cp"], r["cpo"]) for r in rows}


_RECOMPUTE_SQL = """
WITH effects AS (
    SELECT t.debit_account_id AS account_id,
           CASE WHEN t.pending THEN t.amount
                WHEN t.post_pending OR t.void_pending THEN -p.amount ELSE 0 END AS dp,
           CASE WHEN t.pending OR t.void_pending THEN 0 ELSE t.amount END AS dpo,
           0::bigint AS cp, 0::bigint AS cpo
    FROM ledger_transfers AS t LEFT JOIN ledger_transfers AS p ON p.id = t.pending_id
    UNION ALL
    SELECT t.credit_account_id, 0, 0,
           CASE WHEN t.pending THEN t.amount
                WHEN t.post_pending OR t.void_pending THEN -p.amount ELSE 0 END,
           CASE WHEN t.pending OR t.void_pending THEN 0 ELSE t.amount END
    FROM ledger_transfers AS t LEFT JOIN ledger_transfers AS p ON p.id = t.pending_id
),
expected AS (
    SELECT account_id, sum(dp) AS dp, sum(dpo) AS dpo, sum(cp) AS cp, sum(cpo) AS cpo
    FROM effects GROUP BY account_id
),
stored AS (
    SELECT account_id, sum(debits_pending) AS dp, sum(debits_posted) AS dpo,
           sum(credits_pending) AS cp, sum(credits_posted) AS cpo
    FROM ledger_balances GROUP BY account_id
)
SELECT a.id,
       coalesce(s.dp, 0)::bigint AS s_dp, coalesce(s.dpo, 0)::bigint AS s_dpo,
       coalesce(s.cp, 0)::bigint AS s_cp, coalesce(s.cpo, 0)::bigint AS s_cpo,
       coalesce(e.dp, 0)::bigint AS e_dp, coalesce(e.dpo, 0)::bigint AS e_dpo,
       coalesce(e.cp, 0)::bigint AS e_cp, coalesce(e.cpo, 0)::bigint AS e_cpo
FROM ledger_accounts AS a
LEFT JOIN stored AS s ON s.account_id = a.id
LEFT JOIN expected AS e ON e.account_id = a.id
"""


async def recompute_balances(conn: asyncpg.Connection, *, repair: bool = False) -> RecomputeReport:
    """Rebuild every balance from the transfers and report the accounts whose stored balance drifted.

    Run it in a REPEATABLE READ transaction to compare one consistent snapshot. With ``repair``,
    the table is locked against writers and each drifted account's slot 0 is corrected so that the
    sum of its slots equals the recomputed balance.
    """
    if repair:
        require_transaction(conn)
        await conn.execute("LOCK TABLE ledger_balances IN EXCLUSIVE MODE")
    rows = await conn.fetch(_RECOMPUTE_SQL)
    drifted = []
    for r in rows:
        stored = Balance(r["s_dp"], r["s_dpo"], r["s_cp"], r["s_cpo"])
        expected = Balance(r["e_dp"], r["e_dpo"], r["e_cp"], r["e_cpo"])
        if stored.as_tuple() != expected.as_tuple():
            drifted.append(BalanceDrift(r["id"], stored, expected))
    if repair and drifted:
        await conn.executemany(
            """
            INSERT INTO ledger_balances AS b
                (account_id, slot, debits_pending, debits_posted, credits_pending, credits_posted)
            VALUES ($1, 0, $2, $3, $4, $5)
            ON CONFLICT (account_id, slot) DO UPDATE SET
                debits_pending = b.debits_pending + EXCLUDED.debits_pending,
                debits_posted = b.debits_posted + EXCLUDED.debits_posted,
                credits_pending = b.credits_pending + EXCLUDED.credits_pending,
                credits_posted = b.credits_posted + EXCLUDED.credits_posted
            """,
            [
                (d.account_id, *(e - s for e, s in zip(d.recomputed.as_tuple(), d.stored.as_tuple(), strict=True)))
                for d in drifted
            ],
        )
    return RecomputeReport(accounts_checked=len(rows), drifted=drifted, repaired=repair and bool(drifted))


async def ledger_totals(conn: asyncpg.Connection) -> dict[str, dict[str, Any]]:
    """Per ledger: total debits and credits (posted and pending). Double entry means they are equal."""
    rows = await conn.fetch(
        """
        SELECT a.ledger, sum(b.debits_posted)::bigint AS debits_posted, sum(b.credits_posted)::bigint AS credits_posted,
               sum(b.debits_pending)::bigint AS debits_pending, sum(b.credits_pending)::bigint AS credits_pending
        FROM ledger_balances AS b JOIN ledger_accounts AS a ON a.id = b.account_id
        GROUP BY a.ledger
        """
    )
    return {r["ledger"]: dict(r) for r in rows}
