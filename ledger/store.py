"""PostgreSQL storage of the ledger's transfers, on an asyncpg connection inside the caller's transaction.

The caller owns the transaction (a request scope, a job, or the group committer); these functions
only read, lock and write. Concurrency control, in the order locks are taken so that no two
writers can deadlock on each other:

1. transaction-scoped advisory locks on every submitted transfer id and every referenced pending
   id, in sorted order: two submissions of one id, or a post racing a void of one pending
   transfer, serialise here, and the later one sees the earlier one's committed row;
2. ``FOR UPDATE`` on the single balance row of every balance-limited account touched, in id order,
   so a limit is checked against a balance no one else can change before commit;
3. increments of unlimited accounts (issuance, pools) into one of ``BALANCE_SLOTS`` striped rows
   chosen per writer (or per connection), in id order, so concurrent writers rarely wait for one another there.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from ledger.account_store import SELECT_ACCOUNTS, AccountCache, ensure_accounts, lookup_accounts
from ledger.engine import BatchProcessor
from ledger.errors import LedgerConflict, require_transaction
from ledger.models import BALANCE_SLOTS
from ledger.types import (
    Account,
    Balance,
    LedgerUnit,
    NewAccount,
    NewTransfer,
    Transfer,
    TransferOutcome,
)

def transfer_columns(alias: str = "") -> str:
    """The columns ``transfer_from_row`` reads, of the table named ``alias`` in a join (metadata as text)."""
    prefix = f"{alias}." if alias else ""
    return (
        f"{prefix}id, {prefix}debit_account_id, {prefix}credit_account_id, {prefix}amount, {prefix}ledger, "
        f"{prefix}code, {prefix}reference, {prefix}metadata::text AS metadata, {prefix}pending, {prefix}post_pending, "
        f"{prefix}void_pending, {prefix}linked, {prefix}pending_id, {prefix}timeout_s, {prefix}timestamp, "
        f"{prefix}expires_at"
    )


_TRANSFER_COLUMNS = transfer_columns()
_RETRYABLE = (asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.SerializationError)

# Keyed reads probe the index once per key (a LATERAL subquery that OFFSET 0 keeps from being
# flattened), rather than ``col = ANY($1)``: a plan cached while a table was small (a new ledger, before
# autovacuum's first ANALYZE) would otherwise keep scanning the whole table as it grows, and the write
# path's cost would grow with the ledger instead of with the batch.
_SELECT_TRANSFERS = f"""
    SELECT t.* FROM unnest($1::uuid[]) AS k(id)
    CROSS JOIN LATERAL (SELECT {_TRANSFER_COLUMNS} FROM ledger_transfers WHERE id = k.id OFFSET 0) AS t
"""
_SELECT_RESOLUTIONS = f"""
    SELECT t.* FROM unnest($1::uuid[]) AS k(id)
    CROSS JOIN LATERAL (SELECT {_TRANSFER_COLUMNS} FROM ledger_transfers WHERE pending_id = k.id OFFSET 0) AS t
"""
_LOCK_IDS = (
    "SELECT clock_timestamp() FROM (SELECT count(pg_advisory_xact_lock(k)) FROM unnest($1::bigint[]) AS k) AS l"
)
# Locked one key at a time in account order (the outer scan is sorted), so that two writers never
# wait on each other's rows in opposite orders.
_LOCK_LIMITED_BALANCES = """
    SELECT b.* FROM (SELECT DISTINCT unnest($1::uuid[]) AS id ORDER BY 1) AS k
    CROSS JOIN LATERAL (
        SELECT account_id, debits_pending, debits_posted, credits_pending, credits_posted
        FROM ledger_balances WHERE account_id = k.id AND slot = 0 FOR UPDATE
    ) AS b
"""
# An upsert whose arbiter is the primary key: one index probe per account, whatever the table's size.
# Balance-limited accounts have their single row (slot 0) from creation, so for them it always updates;
# unlimited accounts are incremented in the writer's stripe. Rows are taken in (account, slot) order.
_ADD_TO_BALANCES = """
    INSERT INTO ledger_balances AS b
        (account_id, slot, debits_pending, debits_posted, credits_pending, credits_posted)
    SELECT id, slot, dp, dpo, cp, cpo
    FROM unnest($1::uuid[], $2::smallint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[])
        AS v(id, slot, dp, dpo, cp, cpo)
    ORDER BY id, slot
    ON CONFLICT (account_id, slot) DO UPDATE SET
        debits_pending = b.debits_pending + EXCLUDED.debits_pending,
        debits_posted = b.debits_posted + EXCLUDED.debits_posted,
        credits_pending = b.credits_pending + EXCLUDED.credits_pending,
        credits_posted = b.credits_posted + EXCLUDED.credits_posted
"""
#: Statements of the write path, prepared when a connection opens so that asyncpg's type
#: introspection never runs while a transaction holds ledger locks.
HOT_STATEMENTS = (
    SELECT_ACCOUNTS,
    _SELECT_TRANSFERS,
    _SELECT_RESOLUTIONS,
    _LOCK_IDS,
    _LOCK_LIMITED_BALANCES,
    _ADD_TO_BALANCES,
)


async def prepare_connection(conn: asyncpg.Connection) -> None:
    """Prepare the write path's statements on a new connection (use as an asyncpg pool ``init``).

    On a database not migrated yet there is nothing to prepare; statements are then prepared on first use.
    """
    try:
        for statement in HOT_STATEMENTS:
            await conn.prepare(statement)
    except asyncpg.exceptions.UndefinedTableError:
        return


def lock_key(value: UUID) -> int:
    """A signed 64-bit advisory-lock key for an id (collisions only cost an extra wait)."""
    return int.from_bytes(value.bytes[:8], "big", signed=True)


def connection_slot(conn: asyncpg.Connection) -> int:
    """The balance stripe a connection's transactions increment unless told otherwise.

    Derived from the server process id: connections open at the same time have distinct ids, mostly
    consecutive, so concurrent transactions (of this process or another) rarely share a stripe and
    wait on each other's row lock, as randomly chosen stripes often did.
    """
    return conn.get_server_pid() % BALANCE_SLOTS


def transfer_from_row(row: asyncpg.Record) -> Transfer:
    metadata = row["metadata"]
    return Transfer(
        id=row["id"],
        debit_account_id=row["debit_account_id"],
        credit_account_id=row["credit_account_id"],
        amount=row["amount"],
        ledger=LedgerUnit(row["ledger"]),
        code=row["code"],
        reference=row["reference"],
        metadata=json.loads(metadata) if metadata is not None else None,
        pending=row["pending"],
        post_pending=row["post_pending"],
        void_pending=row["void_pending"],
        linked=row["linked"],
        pending_id=row["pending_id"],
        timeout_s=row["timeout_s"],
        timestamp=row["timestamp"],
        expires_at=row["expires_at"],
    )


# --------------------------------------------------------------------------------------------- transfers


async def apply_in_transaction(
    conn: asyncpg.Connection, transfers: Sequence[NewTransfer], *, accounts: Iterable[NewAccount] = ()
) -> list[TransferOutcome]:
    """The in-transaction write path: ledger entries that commit or roll back with the caller's own rows.

    Creates those of ``accounts`` that do not exist yet, then applies ``transfers``, on ``conn`` inside
    the caller's transaction (one result per transfer, in order). The accounts read or created here
    serve the transfers too, so a credit to known accounts costs one accounts lookup. Raises
    ``LedgerConflict`` on a deadlock or serialisation failure: the caller's transaction must be retried.
    """
    cache = await ensure_accounts(conn, accounts)
    return await apply_transfers(conn, transfers, accounts=cache)


async def apply_transfers(
    conn: asyncpg.Connection,
    transfers: Sequence[NewTransfer],
    *,
    slot: int | None = None,
    accounts: AccountCache | None = None,
) -> list[TransferOutcome]:
    """Create a batch of transfers in the caller's transaction; one result per transfer, in order."""
    return (await apply_segments(conn, [transfers], slot=slot, accounts=accounts))[0]


async def apply_segments(
    conn: asyncpg.Connection,
    segments: Sequence[Sequence[NewTransfer]],
    *,
    slot: int | None = None,
    accounts: AccountCache | None = None,
) -> list[list[TransferOutcome]]:
    """Create several independent submissions in one transaction (group commit).

    Each segment keeps its own linked chains and results; a failure in one never affects another.
    ``slot`` picks the striped balance row this writer increments for unlimited accounts; ``accounts``
    is a writer's cache of accounts read before (see ``AccountCache`` for when one may be used).
    Raises ``LedgerConflict`` on a deadlock or serialisation failure: the transaction must be retried.
    """
    require_transaction(conn)
    try:
        return await _apply_segments(conn, segments, connection_slot(conn) if slot is None else slot, accounts)
    except _RETRYABLE as exc:
        raise LedgerConflict(str(exc)) from exc


async def _apply_segments(
    conn: asyncpg.Connection, segments: Sequence[Sequence[NewTransfer]], slot: int, cache: AccountCache | None
) -> list[list[TransferOutcome]]:
    transfer_ids = {t.id for segment in segments for t in segment}
    pending_ids = {t.pending_id for segment in segments for t in segment if t.pending_id is not None}
    now: datetime = await conn.fetchval(_LOCK_IDS, sorted({lock_key(i) for i in transfer_ids | pending_ids}))
    known = {
        r["id"]: transfer_from_row(r)
        for r in await conn.fetch(_SELECT_TRANSFERS, list(transfer_ids | pending_ids))
    }
    resolutions: dict[UUID, Transfer] = {}
    if pending_ids:
        for r in await conn.fetch(_SELECT_RESOLUTIONS, list(pending_ids)):
            resolutions[r["pending_id"]] = transfer_from_row(r)

    # Only transfers that do not exist yet can move balances: a pure retry locks and writes nothing.
    account_ids: set[UUID] = set()
    for segment in segments:
        for t in segment:
            if t.id in known:
                continue
            account_ids.update(i for i in (t.debit_account_id, t.credit_account_id) if i is not None)
            if t.pending_id is not None and (p := known.get(t.pending_id)) is not None:
                account_ids.update((p.debit_account_id, p.credit_account_id))

    accounts = await (cache.read(conn, account_ids) if cache is not None else lookup_accounts(conn, account_ids))
    limited = sorted(a.id for a in accounts.values() if a.constrained)
    balances: dict[UUID, Balance] = {}
    if limited:
        for r in await conn.fetch(_LOCK_LIMITED_BALANCES, limited):
            balances[r["account_id"]] = Balance(
                r["debits_pending"], r["debits_posted"], r["credits_pending"], r["credits_posted"]
            )

    processor = BatchProcessor(
        now=now, accounts=accounts, balances=balances, known=known, resolutions=resolutions
    )
    results = processor.run(segments)
    decided = processor.outcome()
    if decided.created:
        await _insert_transfers(conn, decided.created)
    if decided.deltas:
        await _write_deltas(conn, decided.deltas, accounts, slot)
    return results


#: New transfers go in by binary COPY: about a third faster per batch than ``INSERT … SELECT FROM
#: unnest(…)``, whose sixteen array parameters asyncpg checks element by element. The statement-level
#: reference trigger and the foreign keys hold for COPY as for INSERT.
_TRANSFER_TABLE_COLUMNS = (
    "id", "debit_account_id", "credit_account_id", "amount", "ledger", "code", "reference", "metadata",
    "pending", "post_pending", "void_pending", "linked", "pending_id", "timeout_s", "timestamp", "expires_at",
)


async def _insert_transfers(conn: asyncpg.Connection, rows: Sequence[Transfer]) -> None:
    texts: dict[int, str] = {}  # by identity: transfers decided together share one metadata object

    def metadata_json(metadata: dict[str, Any] | None) -> str | None:
        if metadata is None:
            return None
        text = texts.get(id(metadata))
        if text is None:
            text = texts[id(metadata)] = json.dumps(metadata, sort_keys=True)
        return text

    await conn.copy_records_to_table(
        "ledger_transfers",
        columns=_TRANSFER_TABLE_COLUMNS,
        records=[
            (
                t.id, t.debit_account_id, t.credit_account_id, t.amount, t.ledger.value, t.code, t.reference,
                metadata_json(t.metadata), t.pending, t.post_pending, t.void_pending, t.linked, t.pending_id,
                t.timeout_s, t.timestamp, t.expires_at,
            )
            for t in rows
        ],
    )


async def _write_deltas(
    conn: asyncpg.Connection, deltas: dict[UUID, list[int]], accounts: dict[UUID, Account], slot: int
) -> None:
    ids = sorted(deltas)
    await conn.execute(
        _ADD_TO_BALANCES,
        ids,
        [0 if accounts[i].constrained else slot for i in ids],
        *([deltas[i][k] for i in ids] for k in range(4)),
    )


async def lookup_transfers(conn: asyncpg.Connection, ids: Iterable[UUID]) -> dict[UUID, Transfer]:
    rows = await conn.fetch(_SELECT_TRANSFERS, list(set(ids)))
    return {r["id"]: transfer_from_row(r) for r in rows}


async def find_expired_pending(conn: asyncpg.Connection, limit: int) -> list[Transfer]:
    """Pending transfers whose timeout has passed and that nobody has posted or voided yet."""
    rows = await conn.fetch(
        f"""
        SELECT {_TRANSFER_COLUMNS} FROM ledger_transfers AS p
        WHERE p.expires_at IS NOT NULL AND p.expires_at <= clock_timestamp()
          AND NOT EXISTS (SELECT 1 FROM ledger_transfers AS r WHERE r.pending_id = p.id)
        ORDER BY p.expires_at LIMIT $1
        """,
        limit,
    )
    return [transfer_from_row(r) for r in rows]


