"""Builders for ledger tests: fresh accounts per test keep tests independent on one shared database."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID

from api.database import migrate
from integrations.embedded_postgres import drop_database, ensure_database, with_database
from ledger.service import Ledger
from ledger.types import AccountCode, CreateAccountResult, LedgerUnit, NewAccount, NewTransfer, TransferCode

APP_ROLE = "carbon_app"
#: Every sealer on the shared test database signs as this log, so all its checkpoints verify together.
LOG_ORIGIN = "carbon-rewards-test"


async def make_account(
    ledger: Ledger,
    code: AccountCode = AccountCode.RESIDENT_POINTS,
    *,
    unit: LedgerUnit = LedgerUnit.POINTS,
    limited: bool = True,
    credit_limited: bool = False,
) -> UUID:
    """A new account; resident-like accounts may not spend more than they were credited."""
    account_id = uuid.uuid4()
    [outcome] = await ledger.create_accounts(
        [
            NewAccount(
                id=account_id,
                ledger=unit,
                code=code,
                owner_ref=f"test:{account_id}",
                debits_must_not_exceed_credits=limited and not credit_limited,
                credits_must_not_exceed_debits=credit_limited,
            )
        ]
    )
    assert outcome.result is CreateAccountResult.OK
    return account_id


async def make_issuance(ledger: Ledger, unit: LedgerUnit = LedgerUnit.POINTS) -> UUID:
    return await make_account(ledger, AccountCode.ISSUANCE, unit=unit, limited=False)


def transfer(
    debit: UUID | None,
    credit: UUID | None,
    amount: int | None,
    *,
    unit: LedgerUnit | None = LedgerUnit.POINTS,
    code: str = TransferCode.ACTION_CREDIT,
    **fields: Any,
) -> NewTransfer:
    return NewTransfer(
        id=fields.pop("id", None) or uuid.uuid4(),
        debit_account_id=debit,
        credit_account_id=credit,
        amount=amount,
        ledger=unit,
        code=code,
        **fields,
    )


def _resolution(pending_id: UUID, amount: int | None, flag: str, fields: dict[str, Any]) -> NewTransfer:
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "debit_account_id": None,
        "credit_account_id": None,
        "amount": amount,
        "ledger": None,
        "code": TransferCode.REDEMPTION,
        "pending_id": pending_id,
        flag: True,
    }
    values.update(fields)
    return NewTransfer(**values)


def post(pending_id: UUID, amount: int | None = None, **fields: Any) -> NewTransfer:
    return _resolution(pending_id, amount, "post_pending", fields)


def void(pending_id: UUID, amount: int | None = None, **fields: Any) -> NewTransfer:
    return _resolution(pending_id, amount, "void_pending", fields)


@asynccontextmanager
async def scratch_database(server_url: str) -> AsyncIterator[str]:
    """A database of its own on the test server, migrated to head, dropped on exit."""
    name = f"carbon_scratch_{uuid.uuid4().hex[:12]}"
    await ensure_database(server_url, name)
    url = with_database(server_url, name)
    try:
        await migrate(url, APP_ROLE)
        yield url
    finally:
        await drop_database(server_url, name)
