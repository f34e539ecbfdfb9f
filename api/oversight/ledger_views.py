"""The ledger as auditors read it over the API: transfers in log order, an account, its statement."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from api.database import raw_connection
from api.pagination import Page, decode_cursor, page_of
from domain.errors import InvalidInput, NotFound
from ledger import (
    Account,
    Balance,
    RunningEntry,
    SealedTransfer,
    accounts_of,
    balance_at,
    find_accounts,
    get_balances,
    running_statement,
    sealed_transfers,
)

#: The kinds of owner an account names (``owner_ref`` is ``<kind>:<id>``).
OWNER_KINDS = ("resident", "merchant", "partner")


class AccountNotFound(NotFound):
    code = "account_not_found"
    title = "No such ledger account"


@dataclass(frozen=True)
class TransferFilter:
    account_id: uuid.UUID | None = None
    owner: uuid.UUID | None = None
    ledger: str | None = None
    code: str | None = None
    reference: str | None = None
    start: datetime | None = None
    end: datetime | None = None


def _position_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    if not cursor.isdigit():
        raise InvalidInput("the cursor is not one this service issued", field="cursor")
    return int(cursor)


async def transfers(
    session: AsyncSession, where: TransferFilter, cursor: str | None, limit: int, newest_first: bool
) -> Page[SealedTransfer]:
    """Sealed transfers matching the filter, by log position: stable while transfers are appended."""
    conn = await raw_connection(session)
    account_ids: list[uuid.UUID] | None = None
    if where.owner is not None:
        account_ids = [a.id for a in await accounts_of(conn, [f"{kind}:{where.owner}" for kind in OWNER_KINDS])]
    if where.account_id is not None:
        account_ids = (
            [i for i in account_ids if i == where.account_id] if account_ids is not None else [where.account_id]
        )
    rows = await sealed_transfers(
        conn,
        account_ids=account_ids,
        ledger=where.ledger,
        code=where.code,
        reference=where.reference,
        start=where.start,
        end=where.end,
        after_position=_position_cursor(cursor),
        newest_first=newest_first,
        limit=limit + 1,
    )
    items = rows[:limit]
    return Page(items, str(items[-1].position) if len(rows) > limit else None)


@dataclass(frozen=True)
class AccountView:
    account: Account
    balance: Balance
    at: datetime | None


async def account(session: AsyncSession, account_id: uuid.UUID, at: datetime | None) -> AccountView:
    """An account and its balance: now (the stored projection), or as of ``at`` (from its transfers)."""
    conn = await raw_connection(session)
    found = (await find_accounts(conn, [account_id])).get(account_id)
    if found is None:
        raise AccountNotFound(f"no ledger account {account_id}")
    if at is None:
        balance = (await get_balances(conn, [account_id])).get(account_id) or Balance()
    else:
        balance = await balance_at(conn, account_id, at)
    return AccountView(found, balance, at)


async def statement(
    session: AsyncSession, account_id: uuid.UUID, until: datetime | None, cursor: str | None, limit: int
) -> Page[RunningEntry]:
    """The account's transfers in time order, each with the balance just after it (up to ``until``)."""
    await account(session, account_id, None)
    entries = await running_statement(
        await raw_connection(session), account_id, after=decode_cursor(cursor), until=until, limit=limit + 1
    )
    return page_of(entries, limit, lambda e: (e.transfer.timestamp, e.transfer.id))
