"""PostgreSQL storage of ledger accounts, on an asyncpg connection inside the caller's transaction.

Accounts are created idempotently (TigerBeetle's rules: an identical re-submission is ``exists``, a
different one names the first differing field) and never change afterwards, which is what lets
``AccountCache`` keep them in memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from uuid import UUID

import asyncpg

from ledger.errors import require_transaction
from ledger.types import (
    MAX_CODE_LENGTH,
    MAX_OWNER_REF_LENGTH,
    ZERO_ID,
    Account,
    AccountOutcome,
    CreateAccountResult,
    LedgerUnit,
    NewAccount,
)

_ACCOUNT_COLUMNS = (
    "id, ledger, code, owner_ref, debits_must_not_exceed_credits, credits_must_not_exceed_debits, created_at"
)
# Keyed reads probe the index once per key (see ``ledger.store``).
SELECT_ACCOUNTS = f"""
    SELECT a.* FROM unnest($1::uuid[]) AS k(id)
    CROSS JOIN LATERAL (SELECT {_ACCOUNT_COLUMNS} FROM ledger_accounts WHERE id = k.id OFFSET 0) AS a
"""

def account_from_row(row: asyncpg.Record) -> Account:
    return Account(
        id=row["id"],
        ledger=LedgerUnit(row["ledger"]),
        code=row["code"],
        owner_ref=row["owner_ref"],
        debits_must_not_exceed_credits=row["debits_must_not_exceed_credits"],
        credits_must_not_exceed_debits=row["credits_must_not_exceed_debits"],
        created_at=row["created_at"],
    )


def _account_static_check(a: NewAccount) -> CreateAccountResult | None:
    if a.id == ZERO_ID:
        return CreateAccountResult.ID_MUST_NOT_BE_ZERO
    if a.debits_must_not_exceed_credits and a.credits_must_not_exceed_debits:
        return CreateAccountResult.FLAGS_ARE_MUTUALLY_EXCLUSIVE
    if a.ledger not in LedgerUnit.__members__.values():
        return CreateAccountResult.LEDGER_UNKNOWN
    if not a.code:
        return CreateAccountResult.CODE_MUST_NOT_BE_EMPTY
    if len(a.code) > MAX_CODE_LENGTH:
        return CreateAccountResult.CODE_TOO_LONG
    if a.owner_ref is not None and len(a.owner_ref) > MAX_OWNER_REF_LENGTH:
        return CreateAccountResult.OWNER_REF_TOO_LONG
    return None


def _compare_account(a: NewAccount, e: Account) -> CreateAccountResult:
    if (a.debits_must_not_exceed_credits, a.credits_must_not_exceed_debits) != (
        e.debits_must_not_exceed_credits,
        e.credits_must_not_exceed_debits,
    ):
        return CreateAccountResult.EXISTS_WITH_DIFFERENT_FLAGS
    if a.ledger != e.ledger:
        return CreateAccountResult.EXISTS_WITH_DIFFERENT_LEDGER
    if a.code != e.code:
        return CreateAccountResult.EXISTS_WITH_DIFFERENT_CODE
    if a.owner_ref != e.owner_ref:
        return CreateAccountResult.EXISTS_WITH_DIFFERENT_OWNER_REF
    return CreateAccountResult.EXISTS


async def create_accounts(conn: asyncpg.Connection, accounts: Sequence[NewAccount]) -> list[AccountOutcome]:
    """Create accounts idempotently: an identical re-submission is ``exists``, a different one names the field."""
    require_transaction(conn)
    failures = {i: _account_static_check(a) for i, a in enumerate(accounts)}
    valid: dict[UUID, NewAccount] = {}
    for i, a in enumerate(accounts):
        if failures[i] is None:
            valid.setdefault(a.id, a)
    inserted: set[UUID] = set()
    if valid:
        rows = await conn.fetch(
            """
            INSERT INTO ledger_accounts
                (id, ledger, code, owner_ref, debits_must_not_exceed_credits, credits_must_not_exceed_debits)
            SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bool[], $6::bool[])
            ORDER BY 1
            ON CONFLICT DO NOTHING
            RETURNING id
            """,
            list(valid),
            [a.ledger.value for a in valid.values()],
            [a.code for a in valid.values()],
            [a.owner_ref for a in valid.values()],
            [a.debits_must_not_exceed_credits for a in valid.values()],
            [a.credits_must_not_exceed_debits for a in valid.values()],
        )
        inserted = {r["id"] for r in rows}
        if inserted:
            await conn.execute(
                "INSERT INTO ledger_balances (account_id, slot) SELECT unnest($1::uuid[]), 0",
                sorted(inserted),
            )
    existing = await lookup_accounts(conn, [i for i in valid if i not in inserted])
    seen: set[UUID] = set()
    outcomes = []
    for i, a in enumerate(accounts):
        if failures[i] is not None:
            outcomes.append(AccountOutcome(a.id, failures[i]))  # type: ignore[arg-type]
        elif a.id in inserted and a.id not in seen:
            outcomes.append(AccountOutcome(a.id, CreateAccountResult.OK))
        else:
            stored = existing.get(a.id) or _as_account(valid[a.id])
            outcomes.append(AccountOutcome(a.id, _compare_account(a, stored)))
        seen.add(a.id)
    return outcomes


def _as_account(a: NewAccount) -> Account:
    return Account(
        id=a.id,
        ledger=a.ledger,
        code=a.code,
        owner_ref=a.owner_ref,
        debits_must_not_exceed_credits=a.debits_must_not_exceed_credits,
        credits_must_not_exceed_debits=a.credits_must_not_exceed_debits,
    )


async def lookup_accounts(conn: asyncpg.Connection, ids: Iterable[UUID]) -> dict[UUID, Account]:
    ids = list(set(ids))
    if not ids:
        return {}
    rows = await conn.fetch(SELECT_ACCOUNTS, ids)
    return {r["id"]: account_from_row(r) for r in rows}


class AccountCache:
    """Accounts already read, kept by a long-lived writer so that most groups skip the accounts query.

    Safe because an account never changes once committed (the table is append-only) and a writer's
    transaction creates none: every account it reads was committed by someone. Code whose own
    transaction may create accounts must not fill a shared cache, since a rollback would leave an
    account here that does not exist; a cache of that transaction's own is fine. Holds at most
    ``capacity`` accounts, dropping the oldest.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._accounts: dict[UUID, Account] = {}

    def __len__(self) -> int:
        return len(self._accounts)

    async def read(self, conn: asyncpg.Connection, ids: Iterable[UUID]) -> dict[UUID, Account]:
        """The existing accounts among ``ids``, from memory where possible and the database otherwise."""
        known = self._accounts
        found: dict[UUID, Account] = {}
        missing = []
        for i in ids:
            account = known.get(i)
            if account is None:
                missing.append(i)
            else:
                found[i] = account
        if missing:
            fetched = await lookup_accounts(conn, missing)
            found.update(fetched)
            for account_id, account in fetched.items():
                if len(known) >= self.capacity:
                    del known[next(iter(known))]
                known[account_id] = account
        return found


async def ensure_accounts(conn: asyncpg.Connection, accounts: Iterable[NewAccount]) -> AccountCache:
    """Create the accounts that do not exist yet (idempotent; one lookup when they all exist).

    Returns them as a cache of this transaction's own, so that its transfers need not look them up
    again. The cache must not outlive the transaction: the transaction may have created some of them.
    """
    wanted = {a.id: a for a in accounts}
    found = AccountCache()
    known = await found.read(conn, wanted)
    missing = [a for i, a in wanted.items() if i not in known]
    if missing:
        await create_accounts(conn, missing)
        await found.read(conn, [a.id for a in missing])
    return found
