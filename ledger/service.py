"""The ledger as a long-lived service: group commit, pending-transfer expiry, reads and verification.

``Ledger.create_transfers`` may be called by many tasks at once. Calls are queued and a few writer
tasks each take whatever is queued (up to ``max_batch`` transfers) and apply it in one database
transaction, so a burst of single-transfer calls costs a handful of commits rather than one each.
Every submission keeps its own results and linked chains. Each writer keeps one connection, and the
writers share a cache of the accounts they have read (accounts never change), so a group costs a few
round trips. Code that must write ledger entries in
the same transaction as its own rows (crediting an action, say) calls ``apply_in_transaction`` on
its transaction's connection instead (see docs/ledger.md, "Two write paths").
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

import asyncpg

from ledger import account_store, balances, log_store, store
from ledger.availability import quiet_outage_logs
from ledger.errors import LedgerClosed, LedgerConflict
from ledger.models import BALANCE_SLOTS
from ledger.periodic import PeriodicTask
from ledger.types import (
    Account,
    AccountOutcome,
    Balance,
    NewAccount,
    NewTransfer,
    RecomputeReport,
    Transfer,
    TransferCode,
    TransferOutcome,
)

log = logging.getLogger(__name__)

#: Namespace of ids derived for the voids the expiry task writes (uuid5 of the pending id).
EXPIRY_NAMESPACE = uuid.UUID("5f0b3c1e-6a43-4f0e-9b7e-2f5d1c9a7e10")
_MAX_ATTEMPTS = 8


#: Told of each committed group: its transfers, its submissions and how long its transaction took (s).
GroupObserver = Callable[[int, int, float], None]


@dataclass(frozen=True, slots=True)
class LogStatus:
    """How far the Merkle log trails the ledger: what operators watch for a stalled sealer."""

    tree_size: int
    #: Committed transfers not yet in the log (counted up to ``UNSEALED_COUNT_LIMIT``).
    unsealed: int
    latest_checkpoint_at: datetime | None


#: Counting unsealed transfers walks them; past this many the answer is "at least this many".
UNSEALED_COUNT_LIMIT = 1_000_000


def expiry_void_id(pending_id: UUID) -> UUID:
    """The id of the void that expires a pending transfer; deterministic so two sweepers write it once."""
    return uuid.uuid5(EXPIRY_NAMESPACE, str(pending_id))


def expiry_void(pending_id: UUID) -> NewTransfer:
    """The void that expires a pending transfer whose timeout has passed (only it is accepted then).

    The expiry task writes exactly this transfer; a feature that expires its own holds in its own
    transaction writes it too, and whichever comes second finds it ``exists``.
    """
    return NewTransfer(
        id=expiry_void_id(pending_id),
        debit_account_id=None,
        credit_account_id=None,
        amount=None,
        ledger=None,
        code=TransferCode.PENDING_EXPIRED,
        void_pending=True,
        pending_id=pending_id,
    )


@dataclass
class _Submission:
    transfers: Sequence[NewTransfer]
    future: asyncio.Future[list[TransferOutcome]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Ledger:
    """Owns a connection pool, the group-commit writers and the expiry task."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        max_batch: int = 2000,
        writers: int = 2,
        expiry_interval_s: float | None = None,
        observe_group: GroupObserver | None = None,
    ) -> None:
        self.pool = pool
        self.max_batch = max_batch
        self._observe_group = observe_group
        self._queue: asyncio.Queue[_Submission | None] = asyncio.Queue()
        self._writer_count = writers
        self._expiry = (
            PeriodicTask("ledger-expiry", self._expire_round, expiry_interval_s) if expiry_interval_s else None
        )
        self._writers: list[asyncio.Task[None]] = []
        self._accounts = account_store.AccountCache()
        self._closed = False
        self._slot_base = random.randrange(BALANCE_SLOTS)

    @classmethod
    async def open(
        cls,
        dsn: str,
        *,
        role: str | None,
        pool_size: int = 10,
        **options: object,
    ) -> Ledger:
        """Connect (assuming ``role`` on every connection) and start the writers."""
        server_settings = {"jit": "off", **({"role": role} if role else {})}
        # One connection first: on a freshly migrated database the first backend rebuilds the
        # relation cache, which is slow when a whole pool does it at once.
        warm = await asyncpg.connect(dsn, server_settings=server_settings)
        await warm.close()
        quiet_outage_logs()
        pool = await asyncpg.create_pool(
            dsn,
            min_size=min(2, pool_size),
            max_size=pool_size,
            server_settings=server_settings,
            init=store.prepare_connection,
        )
        assert pool is not None
        ledger = cls(pool, **options)  # type: ignore[arg-type]
        ledger.start()
        return ledger

    def start(self) -> None:
        for index in range(self._writer_count):
            self._writers.append(asyncio.create_task(self._writer(index), name=f"ledger-writer-{index}"))
        if self._expiry is not None:
            self._expiry.start()

    async def close(self) -> None:
        """Finish queued submissions, stop the background tasks and close the pool."""
        if self._expiry is not None:
            await self._expiry.stop()
        self._closed = True
        for _ in range(self._writer_count):
            self._queue.put_nowait(None)
        await asyncio.gather(*self._writers)
        self._writers.clear()
        await self.pool.close()

    # ------------------------------------------------------------------------------------------ writes

    async def create_accounts(self, accounts: Sequence[NewAccount]) -> list[AccountOutcome]:
        async with self.pool.acquire() as conn, conn.transaction():
            return await account_store.create_accounts(conn, accounts)

    async def create_transfers(self, transfers: Sequence[NewTransfer]) -> list[TransferOutcome]:
        """Apply a list of transfers atomically per linked chain; returns one result per transfer."""
        if self._closed:
            raise LedgerClosed()
        if not transfers:
            return []
        submission = _Submission(list(transfers))
        self._queue.put_nowait(submission)
        return await asyncio.shield(submission.future)

    async def _writer(self, index: int) -> None:
        slot = (self._slot_base + index) % BALANCE_SLOTS
        connection = _WriterConnection(self.pool)
        try:
            while True:
                first = await self._queue.get()
                if first is None:
                    return
                group = [first]
                size = len(first.transfers)
                while size < self.max_batch and not self._queue.empty():
                    nxt = self._queue.get_nowait()
                    if nxt is None:
                        self._queue.put_nowait(None)
                        break
                    if size + len(nxt.transfers) > self.max_batch:
                        await self._commit(group, slot, connection)
                        group, size = [], 0
                    group.append(nxt)
                    size += len(nxt.transfers)
                await self._commit(group, slot, connection)
        finally:
            await connection.release()

    async def _commit(self, group: list[_Submission], slot: int, connection: _WriterConnection) -> None:
        started = time.perf_counter()
        try:
            results = await self._apply_with_retry([s.transfers for s in group], slot, connection)
            if self._observe_group is not None:
                transfers = sum(len(s.transfers) for s in group)
                self._observe_group(transfers, len(group), time.perf_counter() - started)
        except Exception as exc:  # noqa: BLE001 - isolate the submission that fails
            if len(group) == 1:
                _settle(group[0], exc=exc)
                return
            log.warning("group commit of %d submissions failed (%s); applying them one by one", len(group), exc)
            for submission in group:
                await self._commit([submission], slot, connection)
            return
        for submission, outcome in zip(group, results, strict=True):
            _settle(submission, result=outcome)

    async def _apply_with_retry(
        self, segments: list[Sequence[NewTransfer]], slot: int, connection: _WriterConnection
    ) -> list[list[TransferOutcome]]:
        for attempt in range(1, _MAX_ATTEMPTS + 1):
            conn = await connection.get()
            try:
                async with conn.transaction():
                    return await store.apply_segments(conn, segments, slot=slot, accounts=self._accounts)
            except LedgerConflict:
                if attempt == _MAX_ATTEMPTS:
                    raise
                await asyncio.sleep(random.uniform(0, 0.005 * 2**attempt))
            except asyncpg.PostgresError:
                raise  # the server refused a statement; the connection itself is fine
            except BaseException:
                await connection.release()  # it may be broken or mid-protocol; the next group gets another
                raise
        raise AssertionError("unreachable")

    # ---------------------------------------------------------------------------------------- expiry

    async def expire_pending(self, limit: int = 1000) -> int:
        """Void pending transfers whose timeout has passed; returns how many this call voided."""
        async with self.pool.acquire() as conn:
            expired = await store.find_expired_pending(conn, limit)
        if not expired:
            return 0
        outcomes = await self.create_transfers([expiry_void(p.id) for p in expired])
        return sum(o.applied for o in outcomes)

    async def _expire_round(self) -> bool:
        return await self.expire_pending() > 0

    # ----------------------------------------------------------------------------------------- reads

    async def ping(self) -> None:
        """One round trip on a pooled connection: the readiness probe of the ledger's own pool."""
        async with self.pool.acquire() as conn:
            await conn.fetchval("SELECT 1")

    async def lookup_accounts(self, ids: Sequence[UUID]) -> dict[UUID, Account]:
        async with self.pool.acquire() as conn:
            return await account_store.lookup_accounts(conn, ids)

    async def lookup_transfers(self, ids: Sequence[UUID]) -> dict[UUID, Transfer]:
        async with self.pool.acquire() as conn:
            return await store.lookup_transfers(conn, ids)

    async def get_balances(self, account_ids: Sequence[UUID]) -> dict[UUID, Balance]:
        async with self.pool.acquire() as conn:
            return await balances.get_balances(conn, account_ids)

    async def log_status(self) -> LogStatus:
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            head = await log_store.log_head(conn)
            unsealed = await log_store.count_unsealed(conn, head, UNSEALED_COUNT_LIMIT)
            checkpoint = await log_store.latest_checkpoint(conn)
        return LogStatus(head.size, unsealed, checkpoint.timestamp if checkpoint else None)

    async def recompute_balances(self, *, repair: bool = False) -> RecomputeReport:
        isolation = "read_committed" if repair else "repeatable_read"
        async with self.pool.acquire() as conn, conn.transaction(isolation=isolation, readonly=not repair):
            return await balances.recompute_balances(conn, repair=repair)

    async def ledger_totals(self) -> dict[str, dict[str, int]]:
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            return await balances.ledger_totals(conn)


class _WriterConnection:
    """The connection a writer keeps between groups, taken from the pool when first needed.

    Acquiring per group would cost the pool's reset query (a round trip) every time; a writer's
    transactions leave no session state behind, since its advisory locks are transaction-scoped.
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._conn: asyncpg.Connection | None = None

    async def get(self) -> asyncpg.Connection:
        if self._conn is not None and not self._usable(self._conn):  # the server ended it (a restart, say)
            await self.release()
        if self._conn is None:
            self._conn = await self.pool.acquire()
        return self._conn

    async def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await self.pool.release(conn)  # a no-op if the pool already took it back

    @staticmethod
    def _usable(conn: asyncpg.Connection) -> bool:
        """False once the connection closed (the pool takes a lost connection back by itself)."""
        try:
            return not conn.is_closed()
        except asyncpg.InterfaceError:  # already back in the pool
            return False


def _settle(
    submission: _Submission, *, result: list[TransferOutcome] | None = None, exc: BaseException | None = None
) -> None:
    if submission.future.done():
        return
    if exc is not None:
        submission.future.set_exception(exc)
    else:
        submission.future.set_result(result or [])
