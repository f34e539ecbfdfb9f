"""A superuser cuts the end off the ledger, or deletes a checkpoint: signatures of what remains still verify,
so the service and the verifier hold a reference outside the database (the last checkpoint the sealer
signed, kept in the data directory, or one fetched earlier from GET /v1/ledger/checkpoints/latest).
The sealer refuses to sign a checkpoint that does not extend it; `ledger verify` fails against it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest

from api import cli
from integrations.simulators.witness import WitnessSimulator
from integrations.witness import HttpWitness
from ledger import WITNESS_FILE, CheckpointWitness, log_store, verify_database
from ledger.checkpoint import Signer
from ledger.sealer import Sealer
from ledger.service import Ledger
from tests.helpers import APP_ROLE, LOG_ORIGIN, make_account, make_issuance, scratch_database, transfer

CUT_AT = 32


@pytest.fixture
async def sealed(server_url: str, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    """40 transfers sealed with checkpoints at 16, 32 and 40, the last one kept by the sealer's witness."""
    async with scratch_database(server_url) as url:
        ledger = await Ledger.open(url, role=APP_ROLE, pool_size=4)
        signer = Signer.generate()
        witness = CheckpointWitness(tmp_path / WITNESS_FILE, LOG_ORIGIN)
        try:
            issuance, resident = await make_issuance(ledger), await make_account(ledger)
            for batch in range(8):
                await ledger.create_transfers([transfer(issuance, resident, 10 * batch + i + 1) for i in range(5)])
            sealer = Sealer(ledger.pool, signer, LOG_ORIGIN, checkpoint_every=16, witnesses=[witness])
            await sealer.catch_up()
            assert witness.load() is not None and witness.load().tree_size == 40  # type: ignore[union-attr]
            conn = await asyncpg.connect(url)  # the superuser
            try:
                yield {
                    "url": url,
                    "ledger": ledger,
                    "signer": signer,
                    "witness": witness,
                    "conn": conn,
                    "issuance": issuance,
                    "resident": resident,
                }
            finally:
                await conn.close()
        finally:
            await ledger.close()


async def cut_off_the_end(conn: asyncpg.Connection, keep: int) -> None:
    """What a superuser would do: drop every leaf, transfer, tree node and checkpoint past ``keep``."""
    async with conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")  # no append-only triggers
        doomed = [
            r["transfer_id"] for r in await conn.fetch("SELECT transfer_id FROM ledger_log WHERE position >= $1", keep)
        ]
        await conn.execute("DELETE FROM ledger_log WHERE position >= $1", keep)
        await conn.execute("DELETE FROM ledger_transfers WHERE id = ANY($1::uuid[])", doomed)
        await conn.execute("DELETE FROM ledger_tree_nodes WHERE (index + 1) * (1::bigint << level) > $1", keep)
        await conn.execute("DELETE FROM ledger_checkpoints WHERE tree_size > $1", keep)


async def test_a_log_cut_short_is_refused_by_the_sealer_and_fails_verify(
    sealed: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    conn, witness = sealed["conn"], sealed["witness"]
    fetched = tmp_path / "latest.json"  # as an auditor would keep GET /v1/ledger/checkpoints/latest
    fetched.write_text(witness.path.read_text())
    await cut_off_the_end(conn, CUT_AT)

    # Without a reference from outside, what remains verifies: that is the hole.
    blind = await verify_database(conn, LOG_ORIGIN, check_balances=False)
    assert blind.ok and blind.tree_size == CUT_AT
    trusted = witness.load()
    report = await verify_database(conn, LOG_ORIGIN, check_balances=False, trusted=trusted)
    assert [p.kind for p in report.problems] == ["checkpoint_deleted", "log_truncated"], report.problems
    assert report.first_bad_position == CUT_AT

    # The service, writing on, refuses to sign a checkpoint over the shortened log.
    ledger = sealed["ledger"]
    await ledger.create_transfers([transfer(sealed["issuance"], sealed["resident"], 7) for _ in range(12)])
    sealer = Sealer(ledger.pool, sealed["signer"], LOG_ORIGIN, checkpoint_every=16, witnesses=[witness])
    before = await conn.fetchval("SELECT max(tree_size) FROM ledger_checkpoints")
    await sealer.catch_up()
    assert await conn.fetchval("SELECT max(tree_size) FROM ledger_checkpoints") == before == CUT_AT
    assert sealer.refusal is not None and "rewritten" in sealer.refusal, sealer.refusal
    assert witness.load() == trusted  # the reference is kept as it was

    # The command line, with the auditor's copy.
    monkeypatch.setenv("DATABASE_URL", sealed["url"])
    monkeypatch.setenv("CARBON_LEDGER_LOG_ORIGIN", LOG_ORIGIN)
    monkeypatch.setenv("CARBON_DATA_DIR", str(tmp_path / "elsewhere"))
    capsys.readouterr()
    status = await asyncio.to_thread(cli.main, ["ledger", "verify", "--trusted-checkpoint", str(fetched)])
    out = capsys.readouterr().out
    assert status == 1 and "trusted checkpoint: size 40" in out and "checkpoint_deleted" in out, out
    fetched.write_text("{not json")
    assert await asyncio.to_thread(cli.main, ["ledger", "verify", "--trusted-checkpoint", str(fetched)]) == 2


async def test_a_deleted_checkpoint_fails_verify_and_stops_signing(sealed: dict[str, Any]) -> None:
    conn, witness = sealed["conn"], sealed["witness"]
    async with conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute("DELETE FROM ledger_checkpoints WHERE tree_size = 40")
    report = await verify_database(conn, LOG_ORIGIN, trusted=witness.load())
    assert [p.kind for p in report.problems] == ["checkpoint_deleted"], report.problems
    ledger = sealed["ledger"]
    await ledger.create_transfers([transfer(sealed["issuance"], sealed["resident"], 3)])
    sealer = Sealer(ledger.pool, sealed["signer"], LOG_ORIGIN, checkpoint_every=16, witnesses=[witness])
    await sealer.catch_up()
    assert sealer.refusal is not None and "deleted" in sealer.refusal
    assert await conn.fetchval("SELECT max(tree_size) FROM ledger_checkpoints") == 32


async def test_a_log_that_extends_the_trusted_checkpoint_verifies_and_is_signed(sealed: dict[str, Any]) -> None:
    conn, witness = sealed["conn"], sealed["witness"]
    ledger = sealed["ledger"]
    await ledger.create_transfers([transfer(sealed["issuance"], sealed["resident"], 5) for _ in range(3)])
    sealer = Sealer(ledger.pool, sealed["signer"], LOG_ORIGIN, checkpoint_every=16, witnesses=[witness])
    signed = await sealer.catch_up()
    assert sealer.refusal is None and signed is not None and signed.tree_size == 43
    assert witness.load() == signed
    assert (await verify_database(conn, LOG_ORIGIN, trusted=signed)).ok
    assert json.loads(witness.path.read_text())["tree_size"] == 43


async def rewrite_with_its_hash(conn: asyncpg.Connection, position: int) -> UUID:
    """Change a sealed transfer's amount and rewrite its leaf hash to match, as a careful tamperer would."""
    async with conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        transfer_id = await conn.fetchval("SELECT transfer_id FROM ledger_log WHERE position = $1", position)
        await conn.execute("UPDATE ledger_transfers SET amount = amount + 1 WHERE id = $1", transfer_id)
        row = await conn.fetchrow(
            f"SELECT {log_store.LEAF_COLUMNS} FROM ledger_transfers AS t WHERE t.id = $1", transfer_id
        )
        leaf = log_store.leaf_hash_of(log_store.leaf_fields(row))
        await conn.execute("UPDATE ledger_log SET leaf_hash = $1 WHERE position = $2", leaf, position)
    return transfer_id


async def test_a_leaf_rewritten_with_its_hash_is_traced_to_its_block_or_its_transfer(server_url: str) -> None:
    """Once verify named only the checkpoint's range; the stored subtree hashes name the 16-leaf block,
    and the balances the transfer, when only one transfer of the block touches the drifted accounts."""
    async with scratch_database(server_url) as url:
        ledger = await Ledger.open(url, role=APP_ROLE, pool_size=4)
        try:
            pairs = [(await make_account(ledger, limited=False), await make_account(ledger)) for _ in range(16)]
            issuance, resident = await make_issuance(ledger), await make_account(ledger)
            for payer, payee in pairs:  # positions 0..15: each transfer between accounts of its own
                await ledger.create_transfers([transfer(payer, payee, 5)])
            await ledger.create_transfers([transfer(issuance, resident, i + 1) for i in range(16)])  # 16..31
            await Sealer(ledger.pool, Signer.generate(), LOG_ORIGIN, checkpoint_every=32).catch_up()
        finally:
            await ledger.close()
        conn = await asyncpg.connect(url)
        try:
            exact = await rewrite_with_its_hash(conn, 5)
            report = await verify_database(conn, LOG_ORIGIN)
            rewritten = [p for p in report.problems if p.kind == "leaf_rewritten"]
            assert len(rewritten) == 1 and rewritten[0].position == 5, report.problems
            assert f"transfer {exact} was changed" in rewritten[0].detail

        finally:
            await conn.close()


async def test_an_external_witness_still_holds_the_reference_when_the_data_directory_copy_is_gone(
    sealed: dict[str, Any], tmp_path: Path
) -> None:
    ledger, conn = sealed["ledger"], sealed["conn"]
    with WitnessSimulator() as simulator:
        async with httpx.AsyncClient(timeout=30) as http:
            external = HttpWitness(simulator.url, LOG_ORIGIN, http)
            await ledger.create_transfers([transfer(sealed["issuance"], sealed["resident"], 2) for _ in range(4)])
            first = Sealer(ledger.pool, sealed["signer"], LOG_ORIGIN, checkpoint_every=16, witnesses=[external])
            signed = await first.catch_up()
            assert signed is not None and (await external.latest()) == signed  # size 44
            await cut_off_the_end(conn, CUT_AT)
            await ledger.create_transfers([transfer(sealed["issuance"], sealed["resident"], 9) for _ in range(20)])
            # The data directory's copy is gone (a new, empty one): the external witness still says 44.
            fresh = CheckpointWitness(tmp_path / "fresh" / WITNESS_FILE, LOG_ORIGIN)
            (tmp_path / "fresh").mkdir()
            again = Sealer(ledger.pool, sealed["signer"], LOG_ORIGIN, checkpoint_every=16, witnesses=[fresh, external])
            await again.catch_up()
            assert again.refusal is not None and "rewritten" in again.refusal
            assert fresh.load() is None and (await external.latest()) == signed
