"""Read side of the Merkle log for callers without a connection of their own (the HTTP API).

Checkpoints, keys and proofs; the whole log as the export file (JSON Lines, what ``carbon-rewards
ledger verify --export`` checks) or a period of it as CSV, both streamed from a server-side cursor on
a pooled connection held for the stream's length; and the verifier on live data.

A long read (an export, a verification, an evidence package) holds a connection of the ledger's pool
for as long as it runs, so a process runs at most ``long_reads`` of them at once: the caller reserves
a slot before it answers (``reserve``, or ``LongReadsBusy``: 503 with ``Retry-After``), and the read
gives it back when it ends, however it ends. The rest of the pool stays with the writers.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from uuid import UUID

import asyncpg

from ledger import log_store
from ledger.audit import export_lines, verify_database
from ledger.checkpoint import Checkpoint, PublicKey
from ledger.errors import LongReadsBusy, TransferNotSealed, TreeSizeNotFound
from ledger.store import transfer_columns
from ledger.verify import VerifyReport

CSV_COLUMNS = (
    "position",
    "transfer_id",
    "timestamp",
    "ledger",
    "code",
    "debit_account_id",
    "credit_account_id",
    "amount",
    "pending",
    "post_pending",
    "void_pending",
    "pending_id",
    "reference",
    "metadata",
)
_LOG_IN_PERIOD = f"""
    SELECT l.position, {transfer_columns("t")}
    FROM ledger_log AS l JOIN ledger_transfers AS t ON t.id = l.transfer_id
    WHERE ($1::timestamptz IS NULL OR t.timestamp >= $1) AND ($2::timestamptz IS NULL OR t.timestamp < $2)
    ORDER BY l.position
"""
#: Rows gathered into one chunk of a streamed export.
_CHUNK_ROWS = 500


#: Transfer ids looked up per query.
_ID_CHUNK = 10_000


class LongRead:
    """A reserved slot for one long read; ``release`` gives it back (once, whatever is called after)."""

    def __init__(self, reader: LogReader) -> None:
        self._reader: LogReader | None = reader

    def release(self) -> None:
        if self._reader is not None:
            self._reader._free_long_reads += 1  # noqa: SLF001 - the slot's own counter
            self._reader = None


class LogReader:
    """Checkpoints, keys, proofs, exports and verification, each on a pooled connection."""

    def __init__(self, pool: asyncpg.Pool, origin: str, *, long_reads: int = 2) -> None:
        self.pool = pool
        self.origin = origin
        self._free_long_reads = long_reads

    def reserve(self) -> LongRead:
        """A slot for a long read, or ``LongReadsBusy`` when all are taken."""
        if self._free_long_reads <= 0:
            raise LongReadsBusy("this worker is already running as many long reads of the ledger as it may")
        self._free_long_reads -= 1
        return LongRead(self)

    async def latest_checkpoint(self) -> Checkpoint:
        async with self.pool.acquire() as conn:
            checkpoint = await log_store.latest_checkpoint(conn)
        if checkpoint is None:
            raise TreeSizeNotFound("no checkpoint has been signed yet")
        return checkpoint

    async def checkpoint(self, tree_size: int) -> Checkpoint:
        async with self.pool.acquire() as conn:
            return await log_store.checkpoint_at(conn, tree_size)

    async def public_keys(self) -> list[PublicKey]:
        async with self.pool.acquire() as conn:
            return list((await log_store.public_keys(conn)).values())

    async def inclusion_proof(
        self, transfer_id: UUID, tree_size: int, *, owner_ref: str | None = None
    ) -> log_store.InclusionProof:
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            return await log_store.inclusion_proof(conn, transfer_id, tree_size, owner_ref=owner_ref)

    async def inclusion_proofs(
        self, transfer_ids: AsyncIterator[UUID], tree_size: int
    ) -> AsyncIterator[tuple[UUID, log_store.InclusionProof | None]]:
        """Proofs of many transfers against one checkpoint, on one connection and snapshot, one at a time
        (None for a transfer not in that tree)."""
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            async for transfer_id in transfer_ids:
                try:
                    yield transfer_id, await log_store.inclusion_proof(conn, transfer_id, tree_size)
                except TransferNotSealed:
                    yield transfer_id, None

    async def count_in_tree(self, transfer_ids: AsyncIterator[UUID], tree_size: int) -> int:
        """How many of these transfers the tree of ``tree_size`` leaves holds (one query per 10,000)."""
        found = 0
        chunk: list[UUID] = []
        async with self.pool.acquire() as conn:
            async for transfer_id in transfer_ids:
                chunk.append(transfer_id)
                if len(chunk) == _ID_CHUNK:
                    found += await log_store.count_in_tree(conn, chunk, tree_size)
                    chunk.clear()
            if chunk:
                found += await log_store.count_in_tree(conn, chunk, tree_size)
        return found

    async def consistency_proof(self, first: int, second: int) -> log_store.ConsistencyProof:
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            return await log_store.consistency_proof(conn, first, second)

    async def export(
        self, slot: LongRead, start: datetime | None = None, end: datetime | None = None
    ) -> AsyncIterator[bytes]:
        """The log as the export file, in chunks of lines (one snapshot); a period of it when given."""
        try:
            async for chunk in self._export(start, end):
                yield chunk
        finally:
            slot.release()

    async def _export(self, start: datetime | None, end: datetime | None) -> AsyncIterator[bytes]:
        async with self.pool.acquire() as conn:
            chunk: list[str] = []
            async for line in export_lines(conn, self.origin, start, end):
                chunk.append(line)
                if len(chunk) >= _CHUNK_ROWS:
                    yield "".join(chunk).encode()
                    chunk.clear()
            if chunk:
                yield "".join(chunk).encode()

    async def export_csv(self, slot: LongRead, start: datetime | None, end: datetime | None) -> AsyncIterator[bytes]:
        """The sealed transfers timestamped in ``[start, end)`` (either may be open), in log order, as CSV."""
        try:
            async for chunk in self._export_csv(start, end):
                yield chunk
        finally:
            slot.release()

    async def _export_csv(self, start: datetime | None, end: datetime | None) -> AsyncIterator[bytes]:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        rows = 0
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            async for r in conn.cursor(_LOG_IN_PERIOD, start, end, prefetch=2000):
                writer.writerow(_csv_row(r))
                rows += 1
                if rows % _CHUNK_ROWS == 0:
                    yield buffer.getvalue().encode()
                    buffer.seek(0)
                    buffer.truncate()
        yield buffer.getvalue().encode()

    async def verify(
        self, slot: LongRead, progress: Callable[[int, int], Awaitable[None]] | None = None
    ) -> VerifyReport:
        """Every leaf, root, signature and balance, on live data (one snapshot)."""
        try:
            async with self.pool.acquire() as conn:
                return await verify_database(conn, self.origin, progress=progress)
        finally:
            slot.release()


def _csv_row(r: asyncpg.Record) -> tuple[object, ...]:
    return (
        r["position"],
        r["id"],
        r["timestamp"].isoformat(),
        r["ledger"],
        r["code"],
        r["debit_account_id"],
        r["credit_account_id"],
        r["amount"],
        r["pending"],
        r["post_pending"],
        r["void_pending"],
        r["pending_id"] or "",
        r["reference"] or "",
        r["metadata"] or "",
    )
