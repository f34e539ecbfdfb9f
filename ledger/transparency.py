"""Read side of the Merkle log for callers without a connection of their own (the HTTP API)."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from ledger import log_store
from ledger.checkpoint import Checkpoint, PublicKey
from ledger.errors import TreeSizeNotFound


class LogReader:
    """Checkpoints, keys and proofs, each read on a pooled connection."""

    def __init__(self, pool: asyncpg.Pool, origin: str) -> None:
        self.pool = pool
        self.origin = origin

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

    async def consistency_proof(self, first: int, second: int) -> log_store.ConsistencyProof:
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            return await log_store.consistency_proof(conn, first, second)
