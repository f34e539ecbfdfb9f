"""The evidence package of a batch (format and offline check: ``integrations.evidence``), streamed.

Every ledger entry the package proves must be under one signed checkpoint, so the package is only
made once the latest checkpoint covers them all (``evidence_not_ready`` until then: sealing and
signing take seconds). It is then written in constant memory whatever the batch's size: one read-only
snapshot of the batch's rows, proofs fetched one entry at a time against that checkpoint.
"""

from __future__ import annotations

import json
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.actions import co2e_transfer_id, reversal_co2e_transfer_id
from api.database import raw_connection
from api.exchange import repository
from api.exchange.batches import batch_transfers
from api.exchange.errors import EvidenceNotReady
from api.exchange.models import ExchangeBatch
from api.exchange.views import get_batch
from domain.methodologies import MethodologyRegistry
from integrations.evidence import FORMAT, b64, line, proof_fields
from ledger import Checkpoint, InclusionProof, LogReader, LongRead, TreeSizeNotFound, checkpoint_to_json

T = TypeVar("T")
#: Reduction lines per chunk of the response.
_CHUNK_LINES = 200


@dataclass(frozen=True)
class EvidencePlan:
    """A batch whose entries are all under ``checkpoint``: its package can be written, in ``slot``."""

    batch: ExchangeBatch
    checkpoint: Checkpoint
    slot: LongRead


async def _entry_ids(conn: asyncpg.Connection, batch: ExchangeBatch) -> AsyncIterator[uuid.UUID]:
    """Every ledger entry the package proves: each reduction's credit, each adjustment's reversal, the batch's own."""
    async for action_id in repository.item_ids(conn, batch.id):
        yield co2e_transfer_id(action_id)
    for row in await conn.fetch(repository.EVIDENCE_ADJUSTMENTS, batch.id):
        yield reversal_co2e_transfer_id(row["action_id"])
    for transfer in batch_transfers(batch.id, batch.grams_co2e, batch.adjustment_g):
        yield transfer.id


async def plan(session: AsyncSession, log_reader: LogReader, batch_id: uuid.UUID) -> EvidencePlan:
    """The batch and the checkpoint its package proves against, or ``EvidenceNotReady``; the package
    gets a slot of the long reads (``LongReadsBusy`` when none is free)."""
    batch = await get_batch(session, batch_id)
    slot = log_reader.reserve()
    try:
        return await _covered(session, log_reader, batch, slot)
    except BaseException:
        slot.release()
        raise


async def _covered(session: AsyncSession, log_reader: LogReader, batch: ExchangeBatch, slot: LongRead) -> EvidencePlan:
    try:
        checkpoint = await log_reader.latest_checkpoint()
    except TreeSizeNotFound:
        raise EvidenceNotReady("no checkpoint has been signed yet", headers={"Retry-After": "5"}) from None
    conn = await raw_connection(session)
    wanted = batch.actions + batch.adjustments + len(batch_transfers(batch.id, batch.grams_co2e, batch.adjustment_g))
    found = await log_reader.count_in_tree(_entry_ids(conn, batch), checkpoint.tree_size)
    if found < wanted:
        raise EvidenceNotReady(
            f"{wanted - found} of the batch's {wanted} ledger entries are not under the latest signed checkpoint "
            f"(tree size {checkpoint.tree_size}) yet",
            headers={"Retry-After": "5"},
        )
    return EvidencePlan(batch, checkpoint, slot)


async def _proved(
    log_reader: LogReader, rows: AsyncIterator[T], transfer_id: Callable[[T], uuid.UUID], tree_size: int
) -> AsyncIterator[tuple[T, InclusionProof]]:
    """Each row with the inclusion proof of its ledger entry, fetched as the rows come (constant memory)."""
    pending: deque[T] = deque()

    async def ids() -> AsyncIterator[uuid.UUID]:
        async for row in rows:
            pending.append(row)
            yield transfer_id(row)

    async for entry_id, proof in log_reader.inclusion_proofs(ids(), tree_size):
        row = pending.popleft()
        if proof is None:  # `plan` found it under the checkpoint, and the log never loses a leaf
            raise RuntimeError(f"ledger entry {entry_id} is not in the tree of {tree_size} leaves")
        yield row, proof


async def _each(items: Iterable[T]) -> AsyncIterator[T]:
    for item in items:
        yield item


def _credit_of(r: asyncpg.Record) -> uuid.UUID:
    return co2e_transfer_id(r["action_id"])


def _reversal_of(r: asyncpg.Record) -> uuid.UUID:
    return reversal_co2e_transfer_id(r["action_id"])


def _reduction(r: asyncpg.Record, proof: InclusionProof) -> str:
    return line(
        "reduction",
        action_id=str(r["action_id"]),
        kind=r["kind"],
        partner_id=str(r["partner_id"]) if r["partner_id"] else None,
        source=r["source"],
        activity=json.loads(r["record"]),
        category=r["category"],
        quantity=r["quantity"],
        methodology_id=r["methodology_id"],
        methodology_version=r["methodology_version"],
        factor=str(r["factor"]),
        grams_co2e=r["grams_co2e"],
        **proof_fields(proof.leaf_data, proof.position, proof.hashes),
    )


async def package(
    sessionmaker: async_sessionmaker[AsyncSession],
    log_reader: LogReader,
    methodologies: MethodologyRegistry,
    evidence: EvidencePlan,
) -> AsyncIterator[bytes]:
    """The package's lines, in the order ``integrations.evidence`` describes, in chunks; then the slot is free."""
    try:
        async for chunk in _lines(sessionmaker, log_reader, methodologies, evidence):
            yield chunk
    finally:
        evidence.slot.release()


async def _lines(
    sessionmaker: async_sessionmaker[AsyncSession],
    log_reader: LogReader,
    methodologies: MethodologyRegistry,
    evidence: EvidencePlan,
) -> AsyncIterator[bytes]:
    batch, tree_size = evidence.batch, evidence.checkpoint.tree_size
    summary = repository.summary_of(batch)
    yield line("header", format=FORMAT, origin=log_reader.origin, batch=summary).encode()
    for key in await log_reader.public_keys():
        yield line("key", key_id=key.key_id, algorithm=key.algorithm, public_key=b64(key.public_key)).encode()
    yield line("checkpoint", **checkpoint_to_json(evidence.checkpoint)).encode()
    async with sessionmaker() as session:
        await session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))  # one snapshot
        conn = await raw_connection(session)
        for row in await conn.fetch(repository.EVIDENCE_METHODOLOGIES, batch.id):
            data = methodologies.data(row["methodology_id"], row["methodology_version"])
            yield line("methodology", data=data).encode()
        reductions = conn.cursor(repository.EVIDENCE_REDUCTIONS, batch.id, prefetch=1000)
        chunk: list[str] = []
        async for r, proof in _proved(log_reader, reductions.__aiter__(), _credit_of, tree_size):
            chunk.append(_reduction(r, proof))
            if len(chunk) >= _CHUNK_LINES:
                yield "".join(chunk).encode()
                chunk.clear()
        yield "".join(chunk).encode()
        adjustments = await conn.fetch(repository.EVIDENCE_ADJUSTMENTS, batch.id)
    async for r, proof in _proved(log_reader, _each(adjustments), _reversal_of, tree_size):
        yield line(
            "adjustment",
            action_id=str(r["action_id"]),
            exported_in=str(r["exported_in"]),
            grams_co2e=r["grams_co2e"],
            **proof_fields(proof.leaf_data, proof.position, proof.hashes),
        ).encode()
    movements = batch_transfers(batch.id, batch.grams_co2e, batch.adjustment_g)
    async for t, proof in _proved(log_reader, _each(movements), lambda t: t.id, tree_size):
        yield line(
            "movement", name=str(t.code), **proof_fields(proof.leaf_data, proof.position, proof.hashes)
        ).encode()
    totals = {k: summary[k] for k in ("actions", "grams_co2e", "adjustments", "adjustment_g", "net_g", "merkle_root")}
    yield line("totals", **totals).encode()
