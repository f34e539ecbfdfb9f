"""Auditing the stored ledger: verify it in place, or export what an offline verifier needs.

Both read one consistent snapshot (a REPEATABLE READ, read-only transaction) and stream the log, so
memory stays flat however long the log is. Beyond ``verify.LogVerifier``'s checks, the database
audit also finds transfers that sit below the sealing cursor without being in the log (a row slipped
into history) and balances that no longer match their transfers.
"""

from __future__ import annotations

from typing import IO

import asyncpg

from ledger import balances, log_store
from ledger.verify import (
    LogRecord,
    LogVerifier,
    VerifyReport,
    write_export_head,
    write_export_record,
)

_LOG_WITH_TRANSFERS = f"""
    SELECT l.position, l.transfer_id, l.leaf_hash, {log_store.LEAF_COLUMNS}
    FROM ledger_log AS l LEFT JOIN ledger_transfers AS t ON t.id = l.transfer_id
    ORDER BY l.position
"""


def _record(row: asyncpg.Record) -> LogRecord:
    transfer = log_store.leaf_fields(row) if row["id"] is not None else None
    return LogRecord(row["position"], row["transfer_id"], bytes(row["leaf_hash"]), transfer)


async def verify_database(conn: asyncpg.Connection, origin: str, *, check_balances: bool = True) -> VerifyReport:
    """Verify every leaf, checkpoint and signature, look for unsealed rows in sealed history, and balances."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        verifier = LogVerifier(await log_store.all_checkpoints(conn), await log_store.public_keys(conn), origin)
        async for row in conn.cursor(_LOG_WITH_TRANSFERS, prefetch=2000):
            verifier.feed(_record(row))
        report = verifier.finish()
        head = await log_store.log_head(conn)
        strays = await conn.fetch(
            """
            SELECT t.id, (SELECT count(*) FROM ledger_log AS l WHERE (l.xact_id, l.transfer_id) < (t.xact_id, t.id))
                   AS would_be_position
            FROM ledger_transfers AS t
            WHERE (t.xact_id, t.id) <= ($1, $2)
              AND NOT EXISTS (SELECT FROM ledger_log AS l WHERE l.transfer_id = t.id)
            ORDER BY t.xact_id, t.id
            """,
            head.last_xact_id,
            head.last_transfer_id,
        )
        for stray in strays:
            report.add(
                "unsealed_in_sealed_history",
                f"transfer {stray['id']} is dated inside the sealed log (it would sit at position "
                f"{stray['would_be_position']}) but was never sealed: it was inserted behind the log's back",
                stray["would_be_position"],
            )
        if check_balances:
            recomputed = await balances.recompute_balances(conn)
            for drift in recomputed.drifted:
                report.add(
                    "balance_drift",
                    f"account {drift.account_id}: stored balance {drift.stored.as_tuple()} but its transfers give "
                    f"{drift.recomputed.as_tuple()}",
                )
    return report


async def export_database(conn: asyncpg.Connection, out: IO[str], origin: str) -> int:
    """Write the keys, checkpoints and every sealed transfer to ``out``; returns the number of leaves."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        keys = (await log_store.public_keys(conn)).values()
        write_export_head(out, origin, keys, await log_store.all_checkpoints(conn))
        count = 0
        async for row in conn.cursor(_LOG_WITH_TRANSFERS, prefetch=2000):
            write_export_record(out, _record(row))
            count += 1
        return count
