"""Two-phase transfers: reserve with ``pending``, resolve once with post (full or partial) or void, or expire."""

from __future__ import annotations

import asyncio
import time
import uuid

from ledger import store
from ledger.service import Ledger, expiry_void_id
from ledger.types import AccountCode, Balance, LedgerUnit, TransferCode
from ledger.types import CreateTransferResult as R
from tests.helpers import make_account, make_issuance, post, transfer, void


async def setup_hold(ledger: Ledger, funds: int = 100, hold: int = 60, timeout_s: int = 0):
    """A resident with ``funds`` points and a pending transfer of ``hold`` to a redemption account."""
    issuance = await make_issuance(ledger)
    resident = await make_account(ledger)
    redemption = await make_account(ledger, AccountCode.REDEMPTION, limited=False)
    pending = transfer(resident, redemption, hold, code=TransferCode.REDEMPTION, pending=True, timeout_s=timeout_s)
    outcomes = await ledger.create_transfers([transfer(issuance, resident, funds), pending])
    assert [o.result for o in outcomes] == [R.OK, R.OK]
    return resident, redemption, pending


async def balance(ledger: Ledger, account_id: uuid.UUID) -> Balance:
    return (await ledger.get_balances([account_id]))[account_id]


async def test_pending_transfer_holds_funds(ledger: Ledger) -> None:
    resident, redemption, _ = await setup_hold(ledger)
    assert (await balance(ledger, resident)).as_tuple() == (60, 0, 0, 100)
    assert (await balance(ledger, redemption)).as_tuple() == (0, 0, 60, 0)
    assert (await balance(ledger, resident)).available_credit == 40


async def test_post_in_full(ledger: Ledger) -> None:
    resident, redemption, pending = await setup_hold(ledger)
    [o] = await ledger.create_transfers([post(pending.id)])
    assert o.result is R.OK
    assert (await balance(ledger, resident)).as_tuple() == (0, 60, 0, 100)
    assert (await balance(ledger, redemption)).as_tuple() == (0, 0, 0, 60)


async def test_partial_post_releases_the_remainder(ledger: Ledger) -> None:
    resident, redemption, pending = await setup_hold(ledger)
    [o] = await ledger.create_transfers([post(pending.id, 25)])
    assert o.result is R.OK
    assert (await balance(ledger, resident)).as_tuple() == (0, 25, 0, 100)
    assert (await balance(ledger, resident)).available_credit == 75
    assert (await balance(ledger, redemption)).as_tuple() == (0, 0, 0, 25)


async def test_void_releases_everything(ledger: Ledger) -> None:
    resident, redemption, pending = await setup_hold(ledger)
    [o] = await ledger.create_transfers([void(pending.id)])
    assert o.result is R.OK
    assert (await balance(ledger, resident)).as_tuple() == (0, 0, 0, 100)
    assert (await balance(ledger, redemption)).as_tuple() == (0, 0, 0, 0)


async def test_a_pending_transfer_resolves_at_most_once(ledger: Ledger) -> None:
    _, _, pending = await setup_hold(ledger)
    outcomes = await ledger.create_transfers([post(pending.id, 10), post(pending.id), void(pending.id)])
    assert [o.result for o in outcomes] == [
        R.OK, R.PENDING_TRANSFER_ALREADY_POSTED, R.PENDING_TRANSFER_ALREADY_POSTED
    ]
    _, _, other = await setup_hold(ledger)
    outcomes = await ledger.create_transfers([void(other.id), post(other.id)])
    assert [o.result for o in outcomes] == [R.OK, R.PENDING_TRANSFER_ALREADY_VOIDED]


async def test_resolution_rules(ledger: Ledger) -> None:
    resident, redemption, pending = await setup_hold(ledger)
    issuance = await make_issuance(ledger)
    [plain] = await ledger.create_transfers([t := transfer(issuance, resident, 1)])
    assert plain.result is R.OK
    outcomes = await ledger.create_transfers([
        post(uuid.uuid4()),
        post(t.id),
        post(pending.id, 61),
        void(pending.id, amount=59),
        post(pending.id, debit_account_id=redemption),
        post(pending.id, credit_account_id=resident),
        post(pending.id, ledger=LedgerUnit.CO2E_G),
        post(pending.id, code=TransferCode.PENDING_EXPIRED),
    ])
    assert [o.result for o in outcomes] == [
        R.PENDING_TRANSFER_NOT_FOUND,
        R.PENDING_TRANSFER_NOT_PENDING,
        R.EXCEEDS_PENDING_TRANSFER_AMOUNT,
        R.PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT,
        R.PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID,
        R.PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID,
        R.PENDING_TRANSFER_HAS_DIFFERENT_LEDGER,
        R.PENDING_TRANSFER_NOT_EXPIRED,
    ]
    assert (await balance(ledger, resident)).as_tuple() == (60, 0, 0, 101)


async def test_pending_and_its_post_in_one_batch(ledger: Ledger) -> None:
    issuance = await make_issuance(ledger)
    resident = await make_account(ledger)
    hold = transfer(issuance, resident, 30, pending=True)
    outcomes = await ledger.create_transfers([hold, post(hold.id, 20)])
    assert [o.result for o in outcomes] == [R.OK, R.OK]
    assert (await balance(ledger, resident)).as_tuple() == (0, 0, 0, 20)


async def test_resubmitted_post_is_exists(ledger: Ledger) -> None:
    _, _, pending = await setup_hold(ledger)
    p = post(pending.id, 10)
    assert (await ledger.create_transfers([p]))[0].result is R.OK
    [again] = await ledger.create_transfers([p])
    assert again.result is R.EXISTS
    [different] = await ledger.create_transfers([post(pending.id, 11, id=p.id)])
    assert different.result is R.EXISTS_WITH_DIFFERENT_AMOUNT


async def test_expired_pending_is_voided_by_the_expiry_task_and_cannot_be_posted(ledger: Ledger) -> None:
    # An expiry void before the deadline is refused (an hour away, so no stall of this machine reaches it).
    _, _, unexpired = await setup_hold(ledger, timeout_s=3600)
    [early] = await ledger.create_transfers([void(unexpired.id, code=TransferCode.PENDING_EXPIRED)])
    assert early.result is R.PENDING_TRANSFER_NOT_EXPIRED
    resident, redemption, pending = await setup_hold(ledger, timeout_s=1)
    await asyncio.sleep(1.2)
    # expired (swept or not): a post already fails
    [late] = await ledger.create_transfers([post(pending.id)])
    assert late.result is R.PENDING_TRANSFER_EXPIRED
    # The session's API app runs its own expiry loop on this database and may sweep first; either
    # way exactly one deterministic void must exist afterwards.
    await ledger.expire_pending()
    stored = await ledger.lookup_transfers([expiry_void_id(pending.id)])
    assert stored[expiry_void_id(pending.id)].void_pending
    assert (await balance(ledger, resident)).as_tuple() == (0, 0, 0, 100)
    assert (await balance(ledger, redemption)).as_tuple() == (0, 0, 0, 0)
    [after] = await ledger.create_transfers([post(pending.id)])
    assert after.result is R.PENDING_TRANSFER_EXPIRED
    [void_after] = await ledger.create_transfers([void(pending.id)])
    assert void_after.result is R.PENDING_TRANSFER_EXPIRED


async def test_background_expiry_task_voids_expired_holds(database_url: str) -> None:
    from tests.helpers import APP_ROLE

    ledger = await Ledger.open(database_url, role=APP_ROLE, pool_size=4, expiry_interval_s=0.2)
    try:
        resident, _, pending = await setup_hold(ledger, timeout_s=1)
        deadline = time.monotonic() + 60  # generous: this machine stalls for seconds; done in ~1 s normally
        while (await balance(ledger, resident)).debits_pending and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert (await balance(ledger, resident)).as_tuple() == (0, 0, 0, 100)
        assert expiry_void_id(pending.id) in await ledger.lookup_transfers([expiry_void_id(pending.id)])
    finally:
        await ledger.close()


async def test_post_void_and_expiry_racing_on_one_hold_have_exactly_one_winner(ledger: Ledger) -> None:
    for _ in range(3):
        resident, redemption, pending = await setup_hold(ledger, timeout_s=1)
        await asyncio.sleep(0.99)

        async def own_transaction(t):  # type: ignore[no-untyped-def]
            async with ledger.pool.acquire() as conn, conn.transaction():
                return (await store.apply_transfers(conn, [t]))[0].result

        racers = [
            *(ledger.create_transfers([post(pending.id)]) for _ in range(10)),
            *(ledger.create_transfers([void(pending.id)]) for _ in range(10)),
            *(own_transaction(post(pending.id, 5)) for _ in range(10)),
            *(own_transaction(void(pending.id)) for _ in range(10)),
            *(ledger.expire_pending() for _ in range(5)),
        ]
        results = await asyncio.gather(*racers)
        resolutions = [r[0].result if isinstance(r, list) else r for r in results[:40]]
        # The sweepers may all have looked just before the deadline and every racer just after it;
        # a last sweep then resolves the hold. A sweep won if the expiry void exists: one of ours, or
        # the session API app's own expiry loop, which runs on this database too.
        await ledger.expire_pending()
        swept = expiry_void_id(pending.id) in await ledger.lookup_transfers([expiry_void_id(pending.id)])
        assert sum(results[40:]) <= int(swept)
        wins = resolutions.count(R.OK) + int(swept)
        assert wins == 1, resolutions
        losers = set(resolutions) - {R.OK}
        assert losers <= {
            R.PENDING_TRANSFER_ALREADY_POSTED, R.PENDING_TRANSFER_ALREADY_VOIDED, R.PENDING_TRANSFER_EXPIRED
        }
        b = await balance(ledger, resident)
        assert b.debits_pending == 0 and b.debits_posted in (0, 5, 60)
        assert (await balance(ledger, redemption)).credits_posted == b.debits_posted
