"""Tamper drill: rewrite history as the database superuser and make `carbon-rewards ledger verify` catch it.

Each case damages the drill's database, runs the real CLI entry point (in a thread, on this
server through ``DATABASE_URL``), checks the exit status and the first bad position it names, then
undoes the damage and checks that the verifier is satisfied again.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from api import cli
from ledger import log_store
from ledger.checkpoint import Signer
from ledger.sealer import Sealer
from ledger.service import Ledger
from tests.helpers import (
    APP_ROLE,
    LOG_ORIGIN,
    make_account,
    make_issuance,
    scratch_database,
    transfer,
)

UNLOCK = "ALTER TABLE ledger_transfers DISABLE TRIGGER ledger_transfers_no_update_delete"
RELOCK = "ALTER TABLE ledger_transfers ENABLE TRIGGER ledger_transfers_no_update_delete"


@pytest.fixture(scope="module")
async def sealed_database_url(server_url: str) -> AsyncIterator[str]:
    """One database for the whole drill (each case undoes its damage): 40 transfers in 8 transactions, sealed."""
    async with scratch_database(server_url) as url:
        ledger = await Ledger.open(url, role=APP_ROLE, pool_size=4)
        try:
            issuance, resident = await make_issuance(ledger), await make_account(ledger)
            for batch in range(8):
                await ledger.create_transfers(
                    [transfer(issuance, resident, 10 * batch + i + 1, metadata={"i": i}) for i in range(5)]
                )
            await Sealer(ledger.pool, Signer.generate(), LOG_ORIGIN, checkpoint_every=16).catch_up()
        finally:
            await ledger.close()
        yield url


@pytest.fixture
async def sealed_database(
    sealed_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[asyncpg.Connection]:
    """A superuser connection to the drill's database, which the CLI under test also uses."""
    monkeypatch.setenv("DATABASE_URL", sealed_database_url)
    monkeypatch.setenv("CARBON_LEDGER_LOG_ORIGIN", LOG_ORIGIN)
    conn = await asyncpg.connect(sealed_database_url)
    try:
        yield conn
    finally:
        await conn.close()


async def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    capsys.readouterr()
    status = await asyncio.to_thread(cli.main, list(args))
    return status, capsys.readouterr().out


async def transfer_at(conn: asyncpg.Connection, position: int) -> asyncpg.Record:
    return await conn.fetchrow(
        "SELECT t.* FROM ledger_log AS l JOIN ledger_transfers AS t ON t.id = l.transfer_id WHERE l.position = $1",
        position,
    )


async def test_untouched_ledger_verifies(sealed_database: asyncpg.Connection, capsys: pytest.CaptureFixture[str]):
    status, out = await run_cli(capsys, "ledger", "verify")
    assert status == 0, out
    assert "40 leaves" in out and "OK" in out


async def test_changed_amount_is_found_at_its_position(
    sealed_database: asyncpg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    conn = sealed_database
    victim = await transfer_at(conn, 13)
    await conn.execute(UNLOCK)
    await conn.execute("UPDATE ledger_transfers SET amount = amount + 100 WHERE id = $1", victim["id"])
    status, out = await run_cli(capsys, "ledger", "verify")
    assert status == 1
    assert "first bad position 13" in out and "leaf_mismatch" in out and "balance_drift" in out

    await conn.execute("UPDATE ledger_transfers SET amount = $2 WHERE id = $1", victim["id"], victim["amount"])
    await conn.execute(RELOCK)
    assert (await run_cli(capsys, "ledger", "verify"))[0] == 0


async def test_deleted_transfer_is_found_at_its_position(
    sealed_database: asyncpg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    conn = sealed_database
    victim = await transfer_at(conn, 27)
    await conn.execute(UNLOCK)
    await conn.execute("DELETE FROM ledger_transfers WHERE id = $1", victim["id"])
    status, out = await run_cli(capsys, "ledger", "verify")
    assert status == 1
    assert "first bad position 27" in out and "transfer_missing" in out

    columns = list(victim.keys())
    await conn.execute(
        f"INSERT INTO ledger_transfers ({', '.join(columns)}) "
        f"VALUES ({', '.join(f'${i}' for i in range(1, len(columns) + 1))})",
        *victim.values(),
    )
    await conn.execute(RELOCK)
    assert (await run_cli(capsys, "ledger", "verify"))[0] == 0


async def test_transfer_slipped_into_history_is_found_where_it_would_sit(
    sealed_database: asyncpg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    conn = sealed_database
    neighbour = await transfer_at(conn, 22)
    expected = await conn.fetchval("SELECT min(position) FROM ledger_log WHERE xact_id = $1", neighbour["xact_id"])
    forged_id = uuid.UUID(int=1)  # sorts before every real id written by the same transaction
    await conn.execute(
        """
        INSERT INTO ledger_transfers (id, debit_account_id, credit_account_id, amount, ledger, code, pending,
            post_pending, void_pending, linked, timeout_s, timestamp, xact_id)
        VALUES ($1, $2, $3, 1000, 'points', 'action_credit', false, false, false, false, 0, $4, $5)
        """,
        forged_id,
        neighbour["debit_account_id"],
        neighbour["credit_account_id"],
        neighbour["timestamp"],
        neighbour["xact_id"],
    )
    status, out = await run_cli(capsys, "ledger", "verify")
    assert status == 1
    assert f"first bad position {expected}" in out and "unsealed_in_sealed_history" in out

    await conn.execute(UNLOCK)
    await conn.execute("DELETE FROM ledger_transfers WHERE id = $1", forged_id)
    await conn.execute(RELOCK)
    assert (await run_cli(capsys, "ledger", "verify"))[0] == 0


async def test_export_verifies_offline_and_a_doctored_export_does_not(
    sealed_database: asyncpg.Connection, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    export = tmp_path / "ledger.jsonl"
    status, out = await run_cli(capsys, "ledger", "export", "--output", str(export))
    assert status == 0 and "exported 40" in out
    status, out = await run_cli(capsys, "ledger", "verify", "--export", str(export))
    assert status == 0, out

    lines = export.read_text().splitlines()
    doctored = []
    for line in lines:
        record = json.loads(line)
        if record["type"] == "leaf" and record["position"] == 8:
            record["transfer"]["amount"] += 1
        doctored.append(json.dumps(record))
    export.write_text("\n".join(doctored) + "\n")
    status, out = await run_cli(capsys, "ledger", "verify", "--export", str(export))
    assert status == 1 and "first bad position 8" in out

    export.write_text("not json\n")
    assert (await run_cli(capsys, "ledger", "verify", "--export", str(export)))[0] == 2


async def test_actions_marked_credited_without_transfers_and_credits_without_actions_are_found(
    sealed_database: asyncpg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ten actions marked credited with no transfers behind them once passed verify."""
    forged = sorted(uuid.uuid4() for _ in range(10))
    await sealed_database.executemany(
        """
        INSERT INTO actions (id, partner_id, external_id, resident_id, account_ref, kind, category, quantity,
            occurred_at, local_day, status, grams_co2e, points, source, record)
        VALUES ($1, $2, $3, $2, 'CARD-1', 'transit', 'metro', 10000, now(), current_date, 'credited', 510, 5,
            'push', '{}')
        """,
        [(action_id, uuid.uuid4(), f"forged-{action_id}") for action_id in forged],
    )
    try:
        status, out = await run_cli(capsys, "ledger", "verify")
        assert status == 1, out
        assert f"credited_action_without_transfers: action {forged[0]} is marked credited" in out
        assert "first of 10 credited actions without transfers and 0 credits without actions" in out
    finally:
        await sealed_database.execute("DELETE FROM actions WHERE id = ANY($1::uuid[])", forged)
    assert (await run_cli(capsys, "ledger", "verify"))[0] == 0

    # The other way round: a credit that names an action nobody decided.
    orphan = await sealed_database.fetchval(
        "SELECT id FROM ledger_transfers WHERE code = 'action_credit' ORDER BY id LIMIT 1"
    )
    await sealed_database.execute(UNLOCK)
    try:
        await sealed_database.execute(
            "UPDATE ledger_transfers SET reference = 'action:' || $1::text WHERE id = $2", str(forged[0]), orphan
        )
        status, out = await run_cli(capsys, "ledger", "verify")
        assert status == 1 and f"credit_without_action: an action_credit transfer names action {forged[0]}" in out
    finally:
        await sealed_database.execute("UPDATE ledger_transfers SET reference = NULL WHERE id = $1", orphan)
        await sealed_database.execute(RELOCK)
    assert (await run_cli(capsys, "ledger", "verify"))[0] == 0


async def test_a_leaf_rewritten_with_its_hash_is_traced_to_its_block(
    sealed_database: asyncpg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every transfer of this drill moves points between the same two accounts, so the balances cannot
    tell which one changed: verify names the 16-leaf block whose stored subtree hash no longer matches."""
    transfer_id = await sealed_database.fetchval("SELECT transfer_id FROM ledger_log WHERE position = 8")
    original = await sealed_database.fetchval("SELECT leaf_hash FROM ledger_log WHERE position = 8")
    await sealed_database.execute(UNLOCK)
    try:
        await sealed_database.execute("ALTER TABLE ledger_log DISABLE TRIGGER USER")
        await sealed_database.execute("UPDATE ledger_transfers SET amount = amount + 1 WHERE id = $1", transfer_id)
        row = await sealed_database.fetchrow(
            f"SELECT {log_store.LEAF_COLUMNS} FROM ledger_transfers AS t WHERE t.id = $1", transfer_id
        )
        forged = log_store.leaf_hash_of(log_store.leaf_fields(row))
        await sealed_database.execute("UPDATE ledger_log SET leaf_hash = $1 WHERE position = 8", forged)
        status, out = await run_cli(capsys, "ledger", "verify")
        assert status == 1 and "leaf_rewritten: [position 0] positions 0..15 no longer fold" in out, out
        assert str(transfer_id) in out.split("leaf_rewritten")[1]
    finally:
        await sealed_database.execute("UPDATE ledger_transfers SET amount = amount - 1 WHERE id = $1", transfer_id)
        await sealed_database.execute("UPDATE ledger_log SET leaf_hash = $1 WHERE position = 8", original)
        await sealed_database.execute("ALTER TABLE ledger_log ENABLE TRIGGER USER")
        await sealed_database.execute(RELOCK)
    assert (await run_cli(capsys, "ledger", "verify"))[0] == 0


@pytest.mark.parametrize(
    ("change", "undo"),
    [
        (
            "debits_must_not_exceed_credits = NOT debits_must_not_exceed_credits",
            "debits_must_not_exceed_credits = NOT debits_must_not_exceed_credits",
        ),
        ("owner_ref = 'someone else'", "owner_ref = $2"),
    ],
)
async def test_a_changed_account_limit_or_owner_is_named(
    sealed_database: asyncpg.Connection, capsys: pytest.CaptureFixture[str], change: str, undo: str
) -> None:
    """Accounts are sealed into a signed hash chain: flipping a no-overdraft flag or an owner once passed."""
    account = await sealed_database.fetchrow(
        "SELECT id, owner_ref FROM ledger_accounts WHERE debits_must_not_exceed_credits ORDER BY id LIMIT 1"
    )
    unlock = "ALTER TABLE ledger_accounts DISABLE TRIGGER ledger_accounts_no_update_delete"
    relock = "ALTER TABLE ledger_accounts ENABLE TRIGGER ledger_accounts_no_update_delete"
    await sealed_database.execute(unlock)
    try:
        await sealed_database.execute(f"UPDATE ledger_accounts SET {change} WHERE id = $1", account["id"])
        status, out = await run_cli(capsys, "ledger", "verify")
        assert status == 1 and f"account_changed: account {account['id']}:" in out, out
    finally:
        if "$2" in undo:
            await sealed_database.execute(
                f"UPDATE ledger_accounts SET {undo} WHERE id = $1", account["id"], account["owner_ref"]
            )
        else:
            await sealed_database.execute(f"UPDATE ledger_accounts SET {undo} WHERE id = $1", account["id"])
        await sealed_database.execute(relock)
    assert (await run_cli(capsys, "ledger", "verify"))[0] == 0


async def test_accounts_are_sealed_and_their_head_signed(sealed_database: asyncpg.Connection) -> None:
    sealed = await sealed_database.fetchval("SELECT count(*) FROM ledger_account_log")
    assert sealed == await sealed_database.fetchval("SELECT count(*) FROM ledger_accounts") > 0
    assert await sealed_database.fetchval("SELECT max(size) FROM ledger_account_checkpoints") == sealed
