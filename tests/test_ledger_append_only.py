"""The database itself refuses to change or remove ledger entries, or to record inconsistent ones."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from ledger import store
from ledger.service import Ledger
from ledger.types import AccountCode, LedgerUnit
from tests.helpers import make_account, make_issuance, transfer


@pytest.fixture
async def one_transfer(ledger: Ledger):  # type: ignore[no-untyped-def]
    issuance = await make_issuance(ledger)
    resident = await make_account(ledger)
    t = transfer(issuance, resident, 10)
    await ledger.create_transfers([t])
    return t


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger_transfers SET amount = amount + 1 WHERE id = $1",
        "DELETE FROM ledger_transfers WHERE id = $1",
        "UPDATE ledger_accounts SET code = 'x' "
        "WHERE id = (SELECT credit_account_id FROM ledger_transfers WHERE id = $1)",
        "DELETE FROM ledger_accounts WHERE id = (SELECT credit_account_id FROM ledger_transfers WHERE id = $1)",
    ],
)
async def test_service_role_may_not_update_or_delete_ledger_rows(
    app_conn: asyncpg.Connection, one_transfer, statement: str  # type: ignore[no-untyped-def]
) -> None:
    with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError, match="permission denied"):
        await app_conn.execute(statement, one_transfer.id)


async def test_service_role_may_not_truncate(app_conn: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
        await app_conn.execute("TRUNCATE ledger_transfers")


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger_transfers SET amount = amount + 1 WHERE id = $1",
        "DELETE FROM ledger_transfers WHERE id = $1",
    ],
)
async def test_even_the_owner_is_refused_by_the_trigger(
    owner_conn: asyncpg.Connection, one_transfer, statement: str  # type: ignore[no-untyped-def]
) -> None:
    with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError, match="append-only"):
        await owner_conn.execute(statement, one_transfer.id)
    assert await owner_conn.fetchval("SELECT amount FROM ledger_transfers WHERE id = $1", one_transfer.id) == 10


async def test_owner_truncate_is_refused_by_the_trigger(owner_conn: asyncpg.Connection) -> None:
    async with owner_conn.transaction():
        with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError, match="append-only"):
            await owner_conn.execute("TRUNCATE ledger_transfers CASCADE")


async def test_service_role_can_append(app_conn: asyncpg.Connection) -> None:
    """The restriction is exactly UPDATE/DELETE: reading and appending work as the service role."""
    assert await app_conn.fetchval("SELECT current_user") == "carbon_app"
    assert await app_conn.fetchval("SELECT has_column_privilege('ledger_transfers', 'amount', 'INSERT')")
    # The sealer's order key is the database's to set, never the service's.
    assert not await app_conn.fetchval("SELECT has_column_privilege('ledger_transfers', 'xact_id', 'INSERT')")
    for table in ("ledger_log", "ledger_tree_nodes", "ledger_checkpoints", "ledger_signing_keys"):
        assert await app_conn.fetchval("SELECT has_table_privilege($1, 'INSERT')", table)
        assert not await app_conn.fetchval("SELECT has_table_privilege($1, 'UPDATE')", table)
        assert not await app_conn.fetchval("SELECT has_table_privilege($1, 'DELETE')", table)
    assert not await app_conn.fetchval("SELECT has_table_privilege('ledger_transfers', 'UPDATE')")
    assert not await app_conn.fetchval("SELECT has_table_privilege('ledger_transfers', 'DELETE')")


async def test_database_refuses_transfers_across_ledgers_or_to_missing_accounts(
    ledger: Ledger, owner_conn: asyncpg.Connection
) -> None:
    """Beyond the ledger's own checks, the schema refuses a transfer whose accounts are not on its ledger."""
    points = await make_issuance(ledger)
    carbon = await make_account(ledger, AccountCode.RESIDENT_CARBON, unit=LedgerUnit.CO2E_G, limited=False)
    insert = (
        "INSERT INTO ledger_transfers (id, debit_account_id, credit_account_id, amount, ledger, code, pending, "
        "post_pending, void_pending, linked, timeout_s, timestamp) "
        "VALUES (gen_random_uuid(), $1, $2, 1, $3, 'adjustment', false, false, false, false, 0, now())"
    )
    cases = [(points, carbon, "points"), (points, carbon, "co2e_g"), (points, uuid.uuid4(), "points")]
    for debit, credit, unit in cases:
        with pytest.raises(asyncpg.exceptions.ForeignKeyViolationError):
            await owner_conn.execute(insert, debit, credit, unit)


async def test_the_ledgers_copy_path_is_refused_alike(ledger: Ledger, app_conn: asyncpg.Connection) -> None:
    """New transfers go in by COPY: as the service role, the foreign keys and the reference trigger still refuse
    accounts off the transfer's ledger, a missing account, and a post of a pending transfer between other accounts."""
    points = await make_issuance(ledger)
    carbon = await make_account(ledger, AccountCode.RESIDENT_CARBON, unit=LedgerUnit.CO2E_G, limited=False)
    resident, other = await make_account(ledger), await make_account(ledger)
    hold = transfer(points, resident, 5, pending=True)
    [held] = await ledger.create_transfers([hold])
    assert held.applied

    def row(debit: uuid.UUID, credit: uuid.UUID, unit: str, pending_id: uuid.UUID | None = None) -> tuple[object, ...]:
        post = pending_id is not None
        return (uuid.uuid4(), debit, credit, 1, unit, "adjustment", None, None,
                False, post, False, False, pending_id, 0, datetime.now(UTC), None)  # fmt: skip

    cases = [
        row(points, carbon, "points"),  # the credit account is on another ledger
        row(points, carbon, "co2e_g"),  # the debit account is on another ledger
        row(uuid.uuid4(), resident, "points"),  # no such debit account
        row(points, uuid.uuid4(), "points"),  # no such credit account
        row(points, other, "points", pending_id=hold.id),  # not the pending transfer's accounts
        row(points, resident, "points", pending_id=uuid.uuid4()),  # no such pending transfer
    ]
    for bad in cases:
        with pytest.raises(asyncpg.exceptions.ForeignKeyViolationError):
            async with app_conn.transaction():
                await app_conn.copy_records_to_table(
                    "ledger_transfers", columns=store._TRANSFER_TABLE_COLUMNS, records=[bad]  # noqa: SLF001
                )
    # The same path takes a post that matches its pending transfer (rolled back: written without its
    # balance change, it would leave a drift in the shared database).
    matching = app_conn.transaction()
    await matching.start()
    try:
        await app_conn.copy_records_to_table(
            "ledger_transfers",
            columns=store._TRANSFER_TABLE_COLUMNS,  # noqa: SLF001
            records=[row(points, resident, "points", pending_id=hold.id)],
        )
    finally:
        await matching.rollback()


@pytest.mark.parametrize("table", ["ledger_log", "ledger_tree_nodes", "ledger_checkpoints", "ledger_signing_keys"])
async def test_merkle_log_tables_refuse_truncate_even_for_the_owner(owner_conn: asyncpg.Connection, table: str) -> None:
    tx = owner_conn.transaction()
    await tx.start()
    try:
        with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError, match="append-only"):
            await owner_conn.execute(f"TRUNCATE {table} CASCADE")
    finally:
        await tx.rollback()
