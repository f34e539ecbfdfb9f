"""Transfers: validation, idempotency, balance limits, linked chains, two-phase transfers."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace

import asyncpg
import pytest

from ledger import LedgerUsageError, account_store, apply_in_transaction, store
from ledger.service import Ledger
from ledger.types import (
    AccountCode,
    Balance,
    CreateAccountResult,
    LedgerUnit,
    NewAccount,
    TransferCode,
)
from ledger.types import (
    CreateTransferResult as R,
)
from tests.helpers import make_account, make_issuance, open_ledger, transfer


async def funded(ledger: Ledger, amount: int) -> tuple[uuid.UUID, uuid.UUID]:
    """An issuance account and a resident credited with ``amount`` points."""
    issuance = await make_issuance(ledger)
    resident = await make_account(ledger)
    [o] = await ledger.create_transfers([transfer(issuance, resident, amount)])
    assert o.result is R.OK
    return issuance, resident


async def balance(ledger: Ledger, account_id: uuid.UUID) -> Balance:
    return (await ledger.get_balances([account_id]))[account_id]


# ------------------------------------------------------------------------------------------- accounts


async def test_account_creation_is_idempotent_and_names_the_differing_field(ledger: Ledger) -> None:
    account = NewAccount(id=uuid.uuid4(), ledger=LedgerUnit.POINTS, code=AccountCode.RESIDENT_POINTS,
                         owner_ref="resident:1", debits_must_not_exceed_credits=True)
    assert [o.result for o in await ledger.create_accounts([account])] == [CreateAccountResult.OK]
    outcomes = await ledger.create_accounts([
        account,
        replace(account, ledger=LedgerUnit.CO2E_G),
        replace(account, code=AccountCode.MERCHANT),
        replace(account, debits_must_not_exceed_credits=False),
        replace(account, owner_ref="resident:2"),
        replace(account, id=uuid.UUID(int=0)),
        replace(account, id=uuid.uuid4(), credits_must_not_exceed_debits=True),
    ])
    assert [o.result for o in outcomes] == [
        CreateAccountResult.EXISTS,
        CreateAccountResult.EXISTS_WITH_DIFFERENT_LEDGER,
        CreateAccountResult.EXISTS_WITH_DIFFERENT_CODE,
        CreateAccountResult.EXISTS_WITH_DIFFERENT_FLAGS,
        CreateAccountResult.EXISTS_WITH_DIFFERENT_OWNER_REF,
        CreateAccountResult.ID_MUST_NOT_BE_ZERO,
        CreateAccountResult.FLAGS_ARE_MUTUALLY_EXCLUSIVE,
    ]


async def test_concurrent_account_creation_of_one_id_creates_it_once(ledger: Ledger) -> None:
    account = NewAccount(id=uuid.uuid4(), ledger=LedgerUnit.POINTS, code=AccountCode.MERCHANT)
    results = await asyncio.gather(*(ledger.create_accounts([account]) for _ in range(30)))
    flat = [r[0].result for r in results]
    assert flat.count(CreateAccountResult.OK) == 1
    assert flat.count(CreateAccountResult.EXISTS) == 29


# ------------------------------------------------------------------------------------ simple transfers


async def test_transfer_moves_points_and_balances_follow(ledger: Ledger) -> None:
    issuance, resident = await funded(ledger, 500)
    merchant = await make_account(ledger, AccountCode.REDEMPTION, limited=False)
    [o] = await ledger.create_transfers([transfer(resident, merchant, 120, code=TransferCode.REDEMPTION)])
    assert o.result is R.OK and o.timestamp is not None
    assert (await balance(ledger, resident)).as_tuple() == (0, 120, 0, 500)
    assert (await balance(ledger, resident)).available_credit == 380
    assert (await balance(ledger, issuance)).as_tuple() == (0, 500, 0, 0)
    assert (await balance(ledger, merchant)).as_tuple() == (0, 0, 0, 120)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"id": uuid.UUID(int=0)}, R.ID_MUST_NOT_BE_ZERO),
        ({"amount": 0}, R.AMOUNT_MUST_NOT_BE_ZERO),
        ({"amount": -5}, R.AMOUNT_MUST_NOT_BE_ZERO),
        ({"amount": 2**60}, R.AMOUNT_EXCEEDS_MAXIMUM),
        ({"code": ""}, R.CODE_MUST_NOT_BE_EMPTY),
        ({"code": "x" * 65}, R.CODE_TOO_LONG),
        ({"reference": "r" * 201}, R.REFERENCE_TOO_LONG),
        ({"metadata": {"bad": object()}}, R.METADATA_MUST_BE_JSON_OBJECT),
        ({"ledger": None}, R.LEDGER_MUST_NOT_BE_ZERO),
        ({"pending": True, "post_pending": True}, R.FLAGS_ARE_MUTUALLY_EXCLUSIVE),
        ({"pending_id": uuid.uuid4()}, R.PENDING_ID_MUST_BE_ZERO),
        ({"timeout_s": 10}, R.TIMEOUT_RESERVED_FOR_PENDING_TRANSFER),
        ({"pending": True, "timeout_s": -1}, R.TIMEOUT_MUST_NOT_BE_NEGATIVE),
        ({"debit": None}, R.DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO),
        ({"credit": None}, R.CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO),
        ({"credit": "same"}, R.ACCOUNTS_MUST_BE_DIFFERENT),
        ({"debit": "missing"}, R.DEBIT_ACCOUNT_NOT_FOUND),
        ({"credit": "missing"}, R.CREDIT_ACCOUNT_NOT_FOUND),
        ({"ledger": LedgerUnit.CO2E_G}, R.TRANSFER_MUST_HAVE_THE_SAME_LEDGER_AS_ACCOUNTS),
        ({"credit": "carbon"}, R.ACCOUNTS_MUST_HAVE_THE_SAME_LEDGER),
    ],
)
async def test_invalid_transfers_are_refused_with_their_reason_and_apply_nothing(
    ledger: Ledger, fields: dict, expected: R
) -> None:
    issuance, resident = await funded(ledger, 100)
    carbon = await make_account(ledger, AccountCode.RESIDENT_CARBON, unit=LedgerUnit.CO2E_G, limited=False)
    aliases = {"same": issuance, "missing": uuid.uuid4(), "carbon": carbon, None: None}
    debit = aliases[fields.pop("debit")] if "debit" in fields else issuance
    credit = aliases[fields.pop("credit")] if "credit" in fields else resident
    unit = fields.pop("ledger", LedgerUnit.POINTS)
    amount = fields.pop("amount", 10)
    before = await balance(ledger, resident)
    [o] = await ledger.create_transfers([transfer(debit, credit, amount, unit=unit, **fields)])
    assert o.result is expected
    assert o.timestamp is None
    assert await balance(ledger, resident) == before


# ---------------------------------------------------------------------------------------- idempotency


async def test_resubmitting_an_identical_transfer_returns_exists_with_the_original_timestamp(ledger: Ledger) -> None:
    issuance, resident = await funded(ledger, 1)
    t = transfer(issuance, resident, 40, reference="action:1", metadata={"b": [1, 2], "a": "x"})
    [first] = await ledger.create_transfers([t])
    await asyncio.sleep(0.01)
    [again] = await ledger.create_transfers([t])
    assert first.result is R.OK
    assert again.result is R.EXISTS
    assert again.timestamp == first.timestamp
    assert (await balance(ledger, resident)).credits_posted == 41


async def test_same_id_with_any_different_field_names_the_first_difference(ledger: Ledger) -> None:
    issuance, resident = await funded(ledger, 1000)
    other = await make_account(ledger)
    t = transfer(issuance, resident, 40, reference="action:1", metadata={"k": 1})
    assert (await ledger.create_transfers([t]))[0].result is R.OK
    variants = [
        (replace(t, amount=41), R.EXISTS_WITH_DIFFERENT_AMOUNT),
        (replace(t, credit_account_id=other), R.EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID),
        (replace(t, debit_account_id=other), R.EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID),
        (replace(t, reference="action:2"), R.EXISTS_WITH_DIFFERENT_REFERENCE),
        (replace(t, metadata={"k": 2}), R.EXISTS_WITH_DIFFERENT_METADATA),
        (replace(t, ledger=LedgerUnit.CO2E_G), R.EXISTS_WITH_DIFFERENT_LEDGER),
        (replace(t, code=TransferCode.REFUND), R.EXISTS_WITH_DIFFERENT_CODE),
        (replace(t, pending=True), R.EXISTS_WITH_DIFFERENT_FLAGS),
        (replace(t, amount=41, code=TransferCode.REFUND), R.EXISTS_WITH_DIFFERENT_AMOUNT),
    ]
    outcomes = await ledger.create_transfers([v for v, _ in variants])
    assert [o.result for o in outcomes] == [e for _, e in variants]
    assert (await balance(ledger, resident)).credits_posted == 1040


async def test_duplicate_id_inside_one_batch_applies_once(ledger: Ledger) -> None:
    issuance, resident = await funded(ledger, 1)
    t = transfer(issuance, resident, 7)
    outcomes = await ledger.create_transfers([t, t, replace(t, amount=8)])
    assert [o.result for o in outcomes] == [R.OK, R.EXISTS, R.EXISTS_WITH_DIFFERENT_AMOUNT]
    assert (await balance(ledger, resident)).credits_posted == 8


async def test_100_concurrent_submissions_of_one_id_apply_once(ledger: Ledger) -> None:
    issuance, resident = await funded(ledger, 1)
    t = transfer(issuance, resident, 25)
    results = await asyncio.gather(*(ledger.create_transfers([t]) for _ in range(100)))
    flat = [r[0] for r in results]
    assert sum(o.result is R.OK for o in flat) == 1
    assert sum(o.result is R.EXISTS for o in flat) == 99
    assert len({o.timestamp for o in flat}) == 1
    assert (await balance(ledger, resident)).credits_posted == 26


async def test_concurrent_submissions_of_one_id_from_independent_transactions_apply_once(
    ledger: Ledger,
) -> None:
    """Like separate service processes: each submission in its own transaction on its own connection."""
    issuance, resident = await funded(ledger, 1)
    t = transfer(issuance, resident, 25)

    async def submit() -> R:
        async with ledger.pool.acquire() as conn, conn.transaction():
            [o] = await store.apply_transfers(conn, [t])
            return o.result

    results = await asyncio.gather(*(submit() for _ in range(100)))
    assert results.count(R.OK) == 1 and results.count(R.EXISTS) == 99
    assert (await balance(ledger, resident)).credits_posted == 26


async def test_the_in_transaction_path_creates_missing_accounts_and_rolls_back_with_its_caller(
    ledger: Ledger,
) -> None:
    """``apply_in_transaction`` writes in the caller's transaction: accounts and transfers commit or vanish together."""
    issuance = await make_issuance(ledger)
    fresh = NewAccount(id=uuid.uuid4(), ledger=LedgerUnit.POINTS, code=AccountCode.RESIDENT_POINTS)
    credit = transfer(issuance, fresh.id, 5)

    class CallerFailed(Exception):
        pass

    with pytest.raises(CallerFailed):
        async with ledger.pool.acquire() as conn, conn.transaction():
            [applied] = await apply_in_transaction(conn, [credit], accounts=[fresh])
            assert applied.result is R.OK
            raise CallerFailed
    assert await ledger.lookup_accounts([fresh.id]) == {}
    assert await ledger.lookup_transfers([credit.id]) == {}

    async with ledger.pool.acquire() as conn, conn.transaction():
        [applied] = await apply_in_transaction(conn, [credit], accounts=[fresh])
    assert applied.result is R.OK
    assert (await balance(ledger, fresh.id)).credits_posted == 5
    async with ledger.pool.acquire() as conn, conn.transaction():
        [again] = await apply_in_transaction(conn, [credit], accounts=[fresh])
    assert again.result is R.EXISTS


async def test_the_in_transaction_path_needs_a_transaction(ledger: Ledger) -> None:
    async with ledger.pool.acquire() as conn:
        with pytest.raises(LedgerUsageError):
            await apply_in_transaction(conn, [transfer(uuid.uuid4(), uuid.uuid4(), 1)])


# -------------------------------------------------------------------------------------------- limits


async def test_debit_beyond_credits_is_refused(ledger: Ledger) -> None:
    _, resident = await funded(ledger, 100)
    sink = await make_account(ledger, AccountCode.REDEMPTION, limited=False)
    outcomes = await ledger.create_transfers([
        transfer(resident, sink, 60), transfer(resident, sink, 41), transfer(resident, sink, 40)
    ])
    assert [o.result for o in outcomes] == [R.OK, R.EXCEEDS_CREDITS, R.OK]
    assert (await balance(ledger, resident)).available_credit == 0


async def test_credit_beyond_debits_is_refused_for_credit_limited_accounts(ledger: Ledger) -> None:
    source = await make_account(ledger, AccountCode.OPERATIONS, limited=False)
    capped = await make_account(ledger, AccountCode.EXCHANGE, credit_limited=True)
    [o] = await ledger.create_transfers([transfer(source, capped, 1)])
    assert o.result is R.EXCEEDS_DEBITS


@pytest.mark.parametrize("independent_transactions", [False, True])
async def test_concurrent_debits_apply_exactly_as_often_as_the_balance_covers(
    ledger: Ledger, independent_transactions: bool
) -> None:
    _, resident = await funded(ledger, 1000)
    sink = await make_account(ledger, AccountCode.REDEMPTION, limited=False)
    debits = [transfer(resident, sink, 70) for _ in range(120)]

    async def submit(t):  # type: ignore[no-untyped-def]
        if not independent_transactions:
            return (await ledger.create_transfers([t]))[0].result
        async with ledger.pool.acquire() as conn, conn.transaction():
            return (await store.apply_transfers(conn, [t]))[0].result

    results = await asyncio.gather(*(submit(t) for t in debits))
    assert results.count(R.OK) == 1000 // 70
    assert results.count(R.EXCEEDS_CREDITS) == 120 - 1000 // 70
    b = await balance(ledger, resident)
    assert b.debits_posted == (1000 // 70) * 70 and b.available_credit == 1000 % 70


async def test_pending_debits_count_against_the_balance(ledger: Ledger) -> None:
    _, resident = await funded(ledger, 100)
    sink = await make_account(ledger, AccountCode.REDEMPTION, limited=False)
    outcomes = await ledger.create_transfers([
        transfer(resident, sink, 80, pending=True), transfer(resident, sink, 30)
    ])
    assert [o.result for o in outcomes] == [R.OK, R.EXCEEDS_CREDITS]


# -------------------------------------------------------------------------------------- linked chains


async def test_linked_chain_succeeds_as_a_whole(ledger: Ledger) -> None:
    issuance, resident = await funded(ledger, 1)
    c_issuance = await make_issuance(ledger, LedgerUnit.CO2E_G)
    carbon = await make_account(ledger, AccountCode.RESIDENT_CARBON, unit=LedgerUnit.CO2E_G, limited=False)
    outcomes = await ledger.create_transfers([
        transfer(issuance, resident, 10, linked=True),
        transfer(c_issuance, carbon, 500, unit=LedgerUnit.CO2E_G),
    ])
    assert [o.result for o in outcomes] == [R.OK, R.OK]


async def test_linked_chain_fails_as_a_whole_and_names_the_failing_transfer(ledger: Ledger) -> None:
    issuance, resident = await funded(ledger, 50)
    sink = await make_account(ledger, AccountCode.REDEMPTION, limited=False)
    chain = [
        transfer(issuance, resident, 10, linked=True),
        transfer(resident, sink, 55, linked=True),
        transfer(resident, sink, 1000, linked=True),
        transfer(issuance, resident, 5),
    ]
    after = transfer(issuance, resident, 1)
    outcomes = await ledger.create_transfers([*chain, after])
    assert [o.result for o in outcomes] == [
        R.LINKED_EVENT_FAILED, R.LINKED_EVENT_FAILED, R.EXCEEDS_CREDITS, R.LINKED_EVENT_FAILED, R.OK
    ]
    assert (await balance(ledger, resident)).as_tuple() == (0, 0, 0, 51)
    # the failed chain's ids are free: nothing of it was stored
    assert not await ledger.lookup_transfers([t.id for t in chain])


async def test_open_chain_at_the_end_of_a_batch_fails(ledger: Ledger) -> None:
    issuance, resident = await funded(ledger, 1)
    outcomes = await ledger.create_transfers([
        transfer(issuance, resident, 1), transfer(issuance, resident, 2, linked=True),
        transfer(issuance, resident, 3, linked=True),
    ])
    assert [o.result for o in outcomes] == [R.OK, R.LINKED_EVENT_FAILED, R.LINKED_EVENT_CHAIN_OPEN]


async def test_chains_never_cross_concurrent_submissions(ledger: Ledger) -> None:
    """Group commit merges submissions into one transaction; an open chain must stay in its own."""
    issuance, resident = await funded(ledger, 1)
    open_chain = [transfer(issuance, resident, 1, linked=True)]
    others = [[transfer(issuance, resident, 1)] for _ in range(20)]
    results = await asyncio.gather(ledger.create_transfers(open_chain), *(ledger.create_transfers(o) for o in others))
    assert results[0][0].result is R.LINKED_EVENT_CHAIN_OPEN
    assert all(r[0].result is R.OK for r in results[1:])


async def test_resubmitted_chain_reports_exists_for_each_transfer(ledger: Ledger) -> None:
    issuance, resident = await funded(ledger, 1)
    chain = [transfer(issuance, resident, 2, linked=True), transfer(issuance, resident, 3)]
    assert [o.result for o in await ledger.create_transfers(chain)] == [R.OK, R.OK]
    assert [o.result for o in await ledger.create_transfers(chain)] == [R.EXISTS, R.EXISTS]
    assert (await balance(ledger, resident)).credits_posted == 6


# ---------------------------------------------------------------------------------- the writers' state


async def test_an_account_created_after_a_refusal_is_found_by_the_writers(ledger: Ledger) -> None:
    """The writers cache the accounts they read, never the absence of one."""
    issuance = await make_issuance(ledger)
    later = NewAccount(id=uuid.uuid4(), ledger=LedgerUnit.POINTS, code=AccountCode.RESIDENT_POINTS)
    [refused] = await ledger.create_transfers([transfer(issuance, later.id, 1)])
    assert refused.result is R.CREDIT_ACCOUNT_NOT_FOUND
    await ledger.create_accounts([later])
    [applied] = await ledger.create_transfers([transfer(issuance, later.id, 1)])
    assert applied.result is R.OK


async def test_the_account_cache_keeps_at_most_its_capacity(ledger: Ledger) -> None:
    ids = [await make_account(ledger) for _ in range(3)]
    cache = account_store.AccountCache(capacity=2)
    async with ledger.pool.acquire() as conn:
        assert set(await cache.read(conn, ids)) == set(ids)
        assert len(cache) == 2
        assert set(await cache.read(conn, [*ids, uuid.uuid4()])) == set(ids)  # evicted ones are read again
    assert len(cache) == 2


async def test_writers_replace_a_connection_the_server_ended(fresh_database_url: str) -> None:
    """Each writer keeps its connection between groups; one the server terminates is not used again."""
    admin = await asyncpg.connect(fresh_database_url)
    async with open_ledger(fresh_database_url) as ledger:
        issuance, resident = await funded(ledger, 1)
        await asyncio.gather(*(ledger.create_transfers([transfer(issuance, resident, 1)]) for _ in range(20)))
        ended = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        assert ended >= 2  # both writers' connections, among others
        await asyncio.sleep(0.5)  # the client side notices the closed sockets
        outcomes = await asyncio.gather(
            *(ledger.create_transfers([transfer(issuance, resident, 1)]) for _ in range(20))
        )
        assert all(o.result is R.OK for [o] in outcomes)
        assert (await balance(ledger, resident)).credits_posted == 41
    await admin.close()
