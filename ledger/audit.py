"""Auditing the stored ledger: verify it in place, or export what an offline verifier needs.

Both read one consistent snapshot (a REPEATABLE READ, read-only transaction) and stream the log
through a server-side cursor, so memory stays flat however long the log is. Beyond ``verify.LogVerifier``'s checks, the database
audit also finds transfers that sit below the sealing cursor without being in the log (a row slipped
into history) and balances that no longer match their transfers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from uuid import UUID

import asyncpg

from ledger import account_log, balances, log_store, merkle
from ledger.checkpoint import Checkpoint
from ledger.models import STORED_NODE_MIN_LEVEL
from ledger.verify import (
    LogRecord,
    LogVerifier,
    VerifyReport,
    export_head_lines,
    export_record_line,
)

#: Reported to a verification's ``progress`` every this many leaves.
PROGRESS_EVERY = 10_000
#: Rows fetched per round trip of the log's cursor.
_PREFETCH = 2000

_LOG_WITH_TRANSFERS = f"""
    SELECT l.position, l.transfer_id, l.leaf_hash, {log_store.LEAF_COLUMNS}
    FROM ledger_log AS l LEFT JOIN ledger_transfers AS t ON t.id = l.transfer_id
    ORDER BY l.position
"""
_LOG_IN_PERIOD = f"""
    SELECT l.position, l.transfer_id, l.leaf_hash, {log_store.LEAF_COLUMNS}
    FROM ledger_log AS l JOIN ledger_transfers AS t ON t.id = l.transfer_id
    WHERE ($1::timestamptz IS NULL OR t.timestamp >= $1) AND ($2::timestamptz IS NULL OR t.timestamp < $2)
    ORDER BY l.position
"""


def _record(row: asyncpg.Record) -> LogRecord:
    transfer = log_store.leaf_fields(row) if row["id"] is not None else None
    return LogRecord(row["position"], row["transfer_id"], bytes(row["leaf_hash"]), transfer)


async def verify_database(
    conn: asyncpg.Connection,
    origin: str,
    *,
    check_balances: bool = True,
    progress: Callable[[int, int], Awaitable[None]] | None = None,
    trusted: Checkpoint | None = None,
) -> VerifyReport:
    """Verify every leaf, checkpoint and signature, look for unsealed rows in sealed history, and balances.

    ``progress(leaves_checked, leaves_in_log)`` is awaited every ``PROGRESS_EVERY`` leaves and at the end.
    """
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        verifier = LogVerifier(
            await log_store.all_checkpoints(conn), await log_store.public_keys(conn), origin, trusted
        )
        total = (await log_store.log_head(conn)).size
        checked = 0
        async for row in conn.cursor(_LOG_WITH_TRANSFERS, prefetch=_PREFETCH):
            verifier.feed(_record(row))
            checked += 1
            if progress is not None and checked % PROGRESS_EVERY == 0:
                await progress(checked, total)
        report = verifier.finish()
        if progress is not None:
            await progress(checked, total)
        await account_log.verify_accounts(conn, origin, await log_store.public_keys(conn), report)
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
        drifted: set[UUID] = set()
        if check_balances:
            recomputed = await balances.recompute_balances(conn)
            for drift in recomputed.drifted:
                drifted.add(drift.account_id)
                report.add(
                    "balance_drift",
                    f"account {drift.account_id}: stored balance {drift.stored.as_tuple()} but its transfers give "
                    f"{drift.recomputed.as_tuple()}",
                )
        for start, end in report.rewritten_ranges:
            await _locate_rewritten_leaf(conn, report, start, end, drifted)
    return report


async def _locate_rewritten_leaf(
    conn: asyncpg.Connection, report: VerifyReport, start: int, end: int, drifted: set[UUID]
) -> None:
    """Narrow a leaf rewritten with its hash down to one transfer where the data allows it.

    The subtree hashes the sealer stored were computed from the leaves as sealed: the first block of
    ``2**STORED_NODE_MIN_LEVEL`` leaves that no longer folds into its stored hash holds the rewritten
    leaf. Its true hash is gone, so within the block the transfer is named only when the balances tell:
    one transfer of the block touches an account whose balance no longer matches its transfers.
    Blocks the tamperer rewrote too, and a last block too short to have a stored hash, leave the
    checkpoint's range.
    """
    width = 1 << STORED_NODE_MIN_LEVEL
    for block in range(start // width, end // width):
        first = block * width
        positions = list(range(first, first + width))
        leaves = await conn.fetch(
            "SELECT position, transfer_id, leaf_hash FROM ledger_log WHERE position = ANY($1::bigint[]) "
            "ORDER BY position",
            positions,
        )
        stored = await conn.fetchval(
            'SELECT hash FROM ledger_tree_nodes WHERE level = $1 AND "index" = $2', STORED_NODE_MIN_LEVEL, block
        )
        if stored is None or len(leaves) != width:
            continue
        if merkle.root([bytes(r["leaf_hash"]) for r in leaves]) == bytes(stored):
            continue
        touching = await conn.fetch(
            "SELECT l.position, t.id FROM ledger_log AS l JOIN ledger_transfers AS t ON t.id = l.transfer_id "
            "WHERE l.position = ANY($1::bigint[]) "
            "AND (t.debit_account_id = ANY($2::uuid[]) OR t.credit_account_id = ANY($2::uuid[]))",
            positions,
            list(drifted),
        )
        if len(touching) == 1:
            [suspect] = touching
            report.add(
                "leaf_rewritten",
                f"position {suspect['position']}: transfer {suspect['id']} was changed and its leaf hash rewritten "
                "to match (its block no longer folds into the subtree hash stored when it was sealed, and it is "
                "the block's only transfer of an account whose balance no longer matches)",
                suspect["position"],
            )
            return
        ids = ", ".join(str(r["transfer_id"]) for r in leaves)
        report.add(
            "leaf_rewritten",
            f"positions {first}..{first + width - 1} no longer fold into the subtree hash stored when they were "
            f"sealed: one of these transfers was changed and its leaf hash rewritten to match: {ids}",
            first,
        )
        return


async def export_lines(
    conn: asyncpg.Connection, origin: str, start: datetime | None = None, end: datetime | None = None
) -> AsyncIterator[str]:
    """The export file, line by line: keys, checkpoints and every sealed transfer (JSON Lines).

    With ``start`` or ``end``, only the leaves of transfers timestamped in ``[start, end)``: for reading,
    since a log with gaps cannot be verified.
    """
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        keys = (await log_store.public_keys(conn)).values()
        for line in export_head_lines(origin, keys, await log_store.all_checkpoints(conn)):
            yield line
        if start is None and end is None:
            rows = conn.cursor(_LOG_WITH_TRANSFERS, prefetch=_PREFETCH)
        else:
            rows = conn.cursor(_LOG_IN_PERIOD, start, end, prefetch=_PREFETCH)
        async for row in rows:
            yield export_record_line(_record(row))
