"""The Merkle log over the ledger: dense positions that never skip a late commit, checkpoints, proofs."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from ledger import log_store, merkle, store
from ledger.audit import verify_database
from ledger.checkpoint import Signer, check_progression, verify_signature
from ledger.errors import CheckpointRejected, TransferNotSealed, TreeSizeNotFound
from ledger.leaf import LeafFields, decode, encode
from ledger.sealer import Sealer
from ledger.service import Ledger
from tests.helpers import APP_ROLE, LOG_ORIGIN, make_account, make_issuance, open_ledger, scratch_database, transfer

ORIGIN = LOG_ORIGIN


@pytest.fixture(scope="module")
async def database_url(server_url: str) -> AsyncIterator[str]:
    """This module's own database. On the run's shared one, the app's background sealer also signs
    checkpoints (with another key) and holds the sealing lock at moments these tests cannot choose."""
    async with scratch_database(server_url) as url:
        yield url


@pytest.fixture(scope="module")
async def ledger(database_url: str) -> AsyncIterator[Ledger]:
    async with open_ledger(database_url) as ledger:
        yield ledger


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer.generate()


@pytest.fixture
async def sealer(ledger: Ledger, signer: Signer) -> AsyncIterator[Sealer]:
    yield Sealer(ledger.pool, signer, ORIGIN, checkpoint_every=500, checkpoint_interval_s=0.05)


async def log_rows(ledger: Ledger) -> list[asyncpg.Record]:
    async with ledger.pool.acquire() as conn:
        return await conn.fetch("SELECT position, transfer_id, leaf_hash FROM ledger_log ORDER BY position")


async def assert_log_is_whole(ledger: Ledger, sealer: Sealer) -> None:
    """Positions 0..n-1, each transfer exactly once, every committed transfer present, roots agree."""
    checkpoint = await sealer.catch_up()
    rows = await log_rows(ledger)
    assert [r["position"] for r in rows] == list(range(len(rows)))
    async with ledger.pool.acquire() as conn:
        all_ids = {r["id"] for r in await conn.fetch("SELECT id FROM ledger_transfers")}
    logged = [r["transfer_id"] for r in rows]
    assert len(logged) == len(set(logged)) and set(logged) == all_ids
    assert checkpoint is not None and checkpoint.tree_size == len(rows)
    assert merkle.root([bytes(r["leaf_hash"]) for r in rows]) == checkpoint.root_hash


async def test_leaf_encoding_round_trips_and_commits_to_every_field() -> None:
    fields = LeafFields(
        id=uuid.uuid4(), debit_account_id=uuid.uuid4(), credit_account_id=uuid.uuid4(), amount=42,
        ledger="points", code="action_credit", pending=True, post_pending=False, void_pending=False, linked=True,
        pending_id=None, timeout_s=30, timestamp=datetime.now(UTC),
        reference="trip:1", metadata_json='{"km": 3.5, "名": "地铁"}',
    )
    assert decode(encode(fields)) == fields
    variants = [
        {"amount": 43}, {"code": "redemption"}, {"linked": False}, {"timeout_s": 31}, {"reference": None},
        {"reference": ""}, {"metadata_json": None}, {"timestamp": fields.timestamp + timedelta(microseconds=1)},
        {"pending_id": uuid.uuid4()}, {"ledger": "co2e_g"},
    ]
    encodings = {encode(fields)} | {encode(LeafFields(**{**_as_dict(fields), **v})) for v in variants}
    assert len(encodings) == len(variants) + 1


def _as_dict(f: LeafFields) -> dict:  # type: ignore[type-arg]
    return {name: getattr(f, name) for name in f.__slots__}  # type: ignore[attr-defined]


async def test_late_commit_is_sealed_once_and_in_order(ledger: Ledger, sealer: Sealer, database_url: str) -> None:
    # The open transaction locks the balance rows it wrote (a resident's, one issuance slot): the later
    # transfers use other accounts so that they can commit while it stays open.
    issuance, resident = await make_issuance(ledger), await make_account(ledger)
    other_issuance, other = await make_issuance(ledger), await make_account(ledger)
    late = transfer(issuance, resident, 5)
    conn = await asyncpg.connect(database_url, server_settings={"role": APP_ROLE})
    try:
        tx = conn.transaction()
        await tx.start()
        [outcome] = await store.apply_transfers(conn, [late])
        assert outcome.applied
        later = [transfer(other_issuance, other, 1) for _ in range(30)]
        assert all(o.applied for o in await ledger.create_transfers(later))
        await sealer.seal_once(force_checkpoint=True)
        sealed = {r["transfer_id"] for r in await log_rows(ledger)}
        assert late.id not in sealed
        assert not sealed & {t.id for t in later}, "sealed past a transaction that had not committed"
        await tx.commit()
    finally:
        await conn.close()
    await assert_log_is_whole(ledger, sealer)
    position = {r["transfer_id"]: r["position"] for r in await log_rows(ledger)}
    assert all(position[late.id] < position[t.id] for t in later)


async def test_concurrent_writers_with_delayed_commits_and_rollbacks(
    ledger: Ledger, signer: Signer, database_url: str
) -> None:
    issuance = await make_issuance(ledger)
    # Accounts without limits take no row locks, so the writers' transactions really overlap.
    residents = [await make_account(ledger, limited=False) for _ in range(5)]
    rolled_back: set[uuid.UUID] = set()

    async def writer(seed: int) -> None:
        rng = random.Random(seed)
        conn = await asyncpg.connect(database_url, server_settings={"role": APP_ROLE})
        try:
            for _ in range(3):
                batch = [transfer(issuance, rng.choice(residents), 1) for _ in range(rng.randint(1, 20))]
                tx = conn.transaction()
                await tx.start()
                await store.apply_transfers(conn, batch)
                await asyncio.sleep(rng.uniform(0, 0.3))
                if rng.random() < 0.2:
                    await tx.rollback()
                    rolled_back.update(t.id for t in batch)
                else:
                    await tx.commit()
        finally:
            await conn.close()

    stop = asyncio.Event()
    sealers = [Sealer(ledger.pool, signer, ORIGIN, checkpoint_every=7, checkpoint_interval_s=0.01) for _ in range(2)]

    async def keep_sealing(s: Sealer) -> None:
        while not stop.is_set():
            await s.seal_once()
            await asyncio.sleep(0.005)

    sealing = [asyncio.create_task(keep_sealing(s)) for s in sealers]
    await asyncio.gather(*(writer(i) for i in range(10)))
    stop.set()
    await asyncio.gather(*sealing)
    await assert_log_is_whole(ledger, sealers[0])
    sealed = {r["transfer_id"] for r in await log_rows(ledger)}
    assert not sealed & rolled_back
    async with ledger.pool.acquire() as conn:
        report = await verify_database(conn, ORIGIN, check_balances=False)
    assert report.ok, report.problems


async def test_inclusion_and_consistency_proofs_from_storage_verify(ledger: Ledger, sealer: Sealer) -> None:
    issuance, resident = await make_issuance(ledger), await make_account(ledger)
    first = await sealer.catch_up()
    mine = [transfer(issuance, resident, i + 1, metadata={"i": i}) for i in range(40)]
    await ledger.create_transfers(mine)
    second = await sealer.catch_up()
    assert first is not None and second is not None and second.tree_size >= first.tree_size + 40
    async with ledger.pool.acquire() as conn:
        # This module's other tests seal the same log, one with a rotated key: verify as an outsider
        # would, against every published key, which must include this sealer's.
        keys = await log_store.public_keys(conn)
        assert sealer.signer.describe().key_id in keys
        for cp in (first, second):
            verify_signature(cp, ORIGIN, keys)
        for t in random.sample(mine, 5):
            proof = await log_store.inclusion_proof(conn, t.id, second.tree_size)
            assert merkle.leaf_hash(proof.leaf_data) == proof.leaf_hash
            assert decode(proof.leaf_data).amount == t.amount
            assert merkle.verify_inclusion(proof.position, second.tree_size, proof.leaf_hash, proof.hashes,
                                           second.root_hash)
            with pytest.raises(TransferNotSealed):
                await log_store.inclusion_proof(conn, t.id, first.tree_size)
        consistency = await log_store.consistency_proof(conn, first.tree_size, second.tree_size)
        assert merkle.verify_consistency(first.tree_size, second.tree_size, first.root_hash, second.root_hash,
                                         consistency.hashes)
        with pytest.raises(TreeSizeNotFound):
            await log_store.consistency_proof(conn, first.tree_size, second.tree_size + 10**9)
        with pytest.raises(TreeSizeNotFound):
            await log_store.inclusion_proof(conn, mine[0].id, second.tree_size + 10**9)


async def test_checkpoints_are_rejected_when_signed_by_an_unknown_key_or_shrinking(
    ledger: Ledger, sealer: Sealer
) -> None:
    issuance, resident = await make_issuance(ledger), await make_account(ledger)
    await ledger.create_transfers([transfer(issuance, resident, 3)])
    genuine = await sealer.catch_up()
    assert genuine is not None
    known = {sealer.signer.key_id: sealer.signer.describe()}
    verify_signature(genuine, ORIGIN, known)

    impostor = Signer.generate().sign(ORIGIN, genuine.tree_size, genuine.root_hash, genuine.timestamp)
    with pytest.raises(CheckpointRejected) as unknown:
        verify_signature(impostor, ORIGIN, known)
    assert unknown.value.reason == "unknown_key"

    forged = type(genuine)(genuine.tree_size + 1, genuine.root_hash, genuine.timestamp, genuine.key_id,
                           genuine.signature)
    with pytest.raises(CheckpointRejected) as bad:
        verify_signature(forged, ORIGIN, known)
    assert bad.value.reason == "bad_signature"
    with pytest.raises(CheckpointRejected) as other_log:
        verify_signature(genuine, "another-log", known)
    assert other_log.value.reason == "bad_signature"

    smaller = sealer.signer.sign(ORIGIN, genuine.tree_size - 1, genuine.root_hash, genuine.timestamp)
    with pytest.raises(CheckpointRejected) as backwards:
        check_progression(genuine, smaller)
    assert backwards.value.reason == "size_went_backwards"


async def test_rotated_keys_keep_old_checkpoints_verifiable(ledger: Ledger, sealer: Sealer) -> None:
    issuance, resident = await make_issuance(ledger), await make_account(ledger)
    await ledger.create_transfers([transfer(issuance, resident, 1)])
    old = await sealer.catch_up()
    rotated = Sealer(ledger.pool, Signer.generate(), ORIGIN, checkpoint_interval_s=0.01)
    await ledger.create_transfers([transfer(issuance, resident, 2)])
    new = await rotated.catch_up()
    assert old is not None and new is not None and old.key_id != new.key_id
    async with ledger.pool.acquire() as conn:
        keys = await log_store.public_keys(conn)
        assert {old.key_id, new.key_id} <= keys.keys()
        for cp in await log_store.all_checkpoints(conn):
            verify_signature(cp, ORIGIN, keys)
