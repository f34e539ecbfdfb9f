"""The sealer: gives every committed transfer its place in the Merkle log and signs checkpoints.

Positions are dense (0, 1, 2, …) and never skip a transfer, even one whose transaction commits
long after transfers written later. The rule: a round takes only transfers whose writing
transaction id is below the oldest transaction still running (``pg_snapshot_xmin``). Such a
transaction has finished, so nothing can ever again appear with that id or a smaller one; the
log's last ``(xact_id, transfer id)`` is therefore a cursor below which the log is complete.
Transfers are sealed in ``(xact_id, id)`` order after that cursor. A long-running transaction
anywhere on the server delays sealing (the lag grows) but never causes a skip.

One round is one transaction, serialised across processes by an advisory lock. It appends at most
``checkpoint_every`` leaves, stores the new subtree hashes, and signs a checkpoint when
``checkpoint_every`` leaves or ``checkpoint_interval_s`` seconds have accumulated since the last.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from ledger import account_log, log_store, merkle, witness
from ledger.checkpoint import Checkpoint, Signer
from ledger.models import STORED_NODE_MIN_LEVEL
from ledger.periodic import PeriodicTask
from ledger.witness import Witness

log = logging.getLogger(__name__)

#: Advisory lock key of the sealer (one sealing transaction at a time, across processes).
SEALER_LOCK_KEY = 0x6C65646765727365  # "ledgerse"


@dataclass(frozen=True, slots=True)
class SealRound:
    appended: int
    tree_size: int
    checkpoint: Checkpoint | None
    locked_out: bool = False


class Sealer:
    def __init__(
        self,
        pool: asyncpg.Pool,
        signer: Signer,
        origin: str,
        *,
        checkpoint_every: int = 10_000,
        checkpoint_interval_s: float = 5.0,
        poll_interval_s: float = 0.2,
        witnesses: Sequence[Witness] = (),
    ) -> None:
        self.pool = pool
        self.signer = signer
        self.origin = origin
        self.checkpoint_every = checkpoint_every
        self.checkpoint_interval_s = checkpoint_interval_s
        self._edge: merkle.CompactRange | None = None
        self._loop = PeriodicTask("ledger-sealer", self._round, poll_interval_s)
        self._key_registered = False
        #: Where the last signed checkpoint is kept outside the database (the data directory, a witness).
        self.witnesses = list(witnesses)
        #: Why the sealer refuses to sign (the log does not extend the last checkpoint it signed), if it does.
        self.refusal: str | None = None
        #: The largest checkpoint the witnesses hold, read outside the sealing transaction (a slow witness
        #: must not hold it open) at most every ``checkpoint_interval_s``, and raised by what this sealer keeps.
        self._witnessed: Checkpoint | None = None
        self._witnessed_at: float | None = None

    async def _refresh_witnessed(self) -> None:
        now = time.monotonic()
        if not self.witnesses or (
            self._witnessed_at is not None and now - self._witnessed_at < self.checkpoint_interval_s
        ):
            return
        found = await witness.latest_witnessed(self.witnesses)
        self._remember(found)
        self._witnessed_at = now

    def _remember(self, checkpoint: Checkpoint | None) -> None:
        if checkpoint is not None and (self._witnessed is None or checkpoint.tree_size > self._witnessed.tree_size):
            self._witnessed = checkpoint

    async def seal_once(self, *, force_checkpoint: bool = False) -> SealRound:
        """One sealing transaction; ``force_checkpoint`` signs a checkpoint whenever the tree grew."""
        await self._refresh_witnessed()
        async with self.pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", SEALER_LOCK_KEY):
                return SealRound(0, -1, None, locked_out=True)
            if not self._key_registered:
                await log_store.register_key(conn, self.signer.describe())
            head = await log_store.log_head(conn)
            horizon = await log_store.seal_horizon(conn)
            rows = await log_store.ready_transfers(conn, head, horizon, self.checkpoint_every)
            edge = self._edge if self._edge is not None and self._edge.size == head.size else None
            if edge is None:
                edge = await log_store.compact_range(conn, head.size)
            edge = merkle.CompactRange(edge.size, edge.edge)
            leaves, nodes = [], []

            def keep(level: int, index: int, h: bytes) -> None:
                if level >= STORED_NODE_MIN_LEVEL:
                    nodes.append((level, index, h))

            for row in rows:
                h = log_store.leaf_hash_of(log_store.leaf_fields(row))
                edge.append(h, keep)
                leaves.append((row["id"], row["xact_id"], h))
            if leaves:
                await log_store.append_leaves(conn, head.size, leaves)
                await log_store.store_nodes(conn, nodes)
            checkpoint = await self._maybe_checkpoint(conn, edge, force_checkpoint)
            accounts = await account_log.seal_accounts(conn, horizon)
            if checkpoint is not None or (force_checkpoint and self.refusal is None):
                now = (
                    checkpoint.timestamp if checkpoint is not None else await conn.fetchval("SELECT clock_timestamp()")
                )
                await account_log.sign_accounts(conn, self.signer, self.origin, accounts, now)
        self._edge = edge
        self._key_registered = True
        if checkpoint is not None:
            # Only once committed: a witness never runs ahead of the database.
            await witness.keep_everywhere(self.witnesses, checkpoint)
            self._remember(checkpoint)
        return SealRound(len(leaves), edge.size, checkpoint)

    async def _maybe_checkpoint(
        self, conn: asyncpg.Connection, edge: merkle.CompactRange, force: bool
    ) -> Checkpoint | None:
        last = await log_store.latest_checkpoint(conn)
        last_size = last.tree_size if last else 0
        if edge.size == last_size and last is not None:
            return None
        now = await conn.fetchval("SELECT clock_timestamp()")
        due = (
            force
            or last is None
            or edge.size - last_size >= self.checkpoint_every
            or (now - last.timestamp).total_seconds() >= self.checkpoint_interval_s
        )
        if not due:
            return None
        trusted = self._witnessed
        if trusted is not None:
            problem = await witness.extension_problem(conn, trusted, edge.size)
            if problem is not None:
                if problem != self.refusal:
                    log.error("refusing to sign a checkpoint: %s (see docs/ledger-verification.md)", problem)
                self.refusal = problem
                return None
        self.refusal = None
        checkpoint = self.signer.sign(self.origin, edge.size, edge.root(), now)
        await log_store.insert_checkpoint(conn, checkpoint)
        return checkpoint

    async def catch_up(self) -> Checkpoint | None:
        """Seal everything sealable now; returns a checkpoint that covers it.

        That is the one this call signs, or, when the tree did not grow, the latest stored checkpoint,
        which another sealer of the same log (another process, another key) may have signed.
        """
        while (await self._seal_when_unlocked(force_checkpoint=False)).appended >= self.checkpoint_every:
            pass
        # Forced, and retried while another sealer is mid-round: its checkpoint may not cover what we sealed.
        final = await self._seal_when_unlocked(force_checkpoint=True)
        async with self.pool.acquire() as conn:
            return final.checkpoint or await log_store.latest_checkpoint(conn)

    async def _seal_when_unlocked(self, force_checkpoint: bool) -> SealRound:
        while (result := await self.seal_once(force_checkpoint=force_checkpoint)).locked_out:
            await asyncio.sleep(0.01)
        return result

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def _round(self) -> bool:
        try:
            result = await self.seal_once()
        except Exception:
            self._edge = None  # rebuilt from the stored log by the next round
            raise
        return result.appended >= self.checkpoint_every
