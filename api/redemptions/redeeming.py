"""Redeeming: hold, capture, void or cancel, expire, refund. The ledger's two-phase transfers do the work.

* **Hold** (``redeem``): a pending transfer of the offer's price from the resident's points to the
  merchant's, timing out with the code. The ledger refuses it when the resident's available points
  (pending holds count) do not cover it; one unit of stock is taken; the code is returned once.
* **Capture**: posts the hold. **Void** (merchant) or **cancel** (resident): voids it and gives the
  unit back. **Expiry**: the hold's timeout passed; the void the ledger's expiry writes (whoever
  writes it first) releases the points, and the unit comes back.
* **Refund**: a transfer from the merchant back to the resident, once, for a captured redemption.

Every change locks the redemption's row, writes its ledger transfer through the in-transaction path
and updates the row in the same transaction, so a capture racing a void, a cancel or the expiry has
exactly one outcome and the ledger agrees with the row. Transfer ids derive from the redemption id.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession

from api.database import raw_connection
from api.rate_limits import count_hit, refuse_after_failures
from api.redemptions import events, repository
from api.redemptions.errors import (
    AlreadyCaptured,
    AlreadyRefunded,
    CodeExpired,
    CodeNotFound,
    CodeVoided,
    InsufficientPoints,
    LedgerRefused,
    MerchantLacksPoints,
    NoCodeDrawn,
    NotCaptured,
    OfferNotFound,
    OfferUnavailable,
    OutOfStock,
    RedemptionLimit,
    RedemptionNotFound,
)
from api.redemptions.models import Redemption
from api.redemptions.runtime import RedemptionsRuntime
from api.webhooks import EventType
from domain.redemptions import RedemptionStatus, VoidedBy, new_code, normalize_code, offer_open
from ledger import (
    CreateTransferResult,
    LedgerUnit,
    NewTransfer,
    TransferCode,
    TransferOutcome,
    apply_in_transaction,
    expiry_void,
    merchant_points_account,
    resident_points_account,
    uuid7,
)

_EXPIRED_IN_LEDGER = frozenset({CreateTransferResult.PENDING_TRANSFER_EXPIRED})
#: Codes drawn before giving up: only a code of a redemption held right now is refused.
_CODE_ATTEMPTS = 5


async def redeem(
    session: AsyncSession, rt: RedemptionsRuntime, resident_id: uuid.UUID, offer_id: uuid.UUID
) -> tuple[Redemption, str]:
    """Hold the offer's price on the resident's points and reserve a unit; returns the redemption and its code."""
    offer = await repository.offer(session, offer_id)
    if offer is None:
        raise OfferNotFound(f"no offer {offer_id}")
    if not offer_open(offer.status, offer.valid_from, offer.valid_until, datetime.now(UTC)):
        raise OfferUnavailable("the offer is paused or outside its validity")
    if offer.stock == 0:  # as read; taking a unit below is what decides, under the offer's row lock
        raise OutOfStock("no unit of this offer is left")
    conn = await raw_connection(session)
    if offer.per_resident_limit is not None:
        await repository.lock_resident_offer(conn, resident_id, offer_id)
        if await repository.live_redemptions(conn, resident_id, offer_id) >= offer.per_resident_limit:
            raise RedemptionLimit(f"this offer allows {offer.per_resident_limit} redemptions per resident")
    redemption_id = uuid7()
    resident, merchant = resident_points_account(resident_id), merchant_points_account(offer.merchant_id)
    hold = NewTransfer(
        id=uuid.uuid5(redemption_id, "hold"),
        debit_account_id=resident.id,
        credit_account_id=merchant.id,
        amount=offer.points_price,
        ledger=LedgerUnit.POINTS,
        code=TransferCode.REDEMPTION,
        reference=f"redemption:{redemption_id}",
        pending=True,
        timeout_s=rt.code_ttl_s,
    )
    [held] = await apply_in_transaction(conn, [hold], accounts=[resident, merchant])
    if held.result is CreateTransferResult.EXCEEDS_CREDITS:
        raise InsufficientPoints(f"the offer costs {offer.points_price} points, more than your available points")
    _require_applied(held)
    if offer.stock is not None and not await repository.take_stock(conn, offer_id):
        raise OutOfStock("no unit of this offer is left")
    assert held.timestamp is not None
    for _ in range(_CODE_ATTEMPTS):
        code = new_code()
        redemption = Redemption(
            id=redemption_id,
            offer_id=offer_id,
            merchant_id=offer.merchant_id,
            resident_id=resident_id,
            points=offer.points_price,
            status=RedemptionStatus.HELD.value,
            code_hash=rt.secret.redemption_code_hash(code),
            code_sealed=rt.secret.seal(code),
            hold_transfer_id=hold.id,
            created_at=held.timestamp,
            expires_at=held.timestamp + timedelta(seconds=rt.code_ttl_s),
        )
        if await repository.insert_held(conn, redemption):
            await events.emit(conn, EventType.REDEMPTION_HELD, [redemption])
            return redemption, code
        # The code of another held redemption (about one chance in 10^9 per live code): draw another.
    raise NoCodeDrawn("retry the request", headers={"Retry-After": "1"})


async def capture(session: AsyncSession, rt: RedemptionsRuntime, merchant_id: uuid.UUID, typed: str) -> Redemption:
    """Post the hold of the code's redemption, for the merchant whose offer it is."""
    now = datetime.now(UTC)
    bucket = f"capture:merchant:{merchant_id}"
    window = rt.capture_failure_window_s
    await refuse_after_failures(session, [(bucket, rt.capture_failures_per_merchant)], window, now)
    code = normalize_code(typed)
    redemption = None
    if code is not None:
        redemption = await repository.redemption_by_code_for_update(session, rt.secret.redemption_code_hash(code))
    if redemption is None or redemption.merchant_id != merchant_id:
        await count_hit(session, bucket, window, now)
        raise CodeNotFound("check the code with the customer (letters and digits, the hyphen is optional)")
    await _ensure_held(session, redemption)
    conn, posted = await _resolve_hold(
        session, redemption, "capture", "the code expired before it was captured; the points were released"
    )
    redemption.status, redemption.captured_at = RedemptionStatus.CAPTURED.value, posted.timestamp
    await session.flush()
    await events.emit(conn, EventType.REDEMPTION_CAPTURED, [redemption])
    return redemption


async def void(session: AsyncSession, redemption_id: uuid.UUID, by: VoidedBy, owner_id: uuid.UUID) -> Redemption:
    """Release a held redemption: the resident cancels it, or the merchant voids it; the unit comes back."""
    redemption = await repository.redemption_for_update(session, redemption_id)
    owner = (
        None if redemption is None else redemption.resident_id if by is VoidedBy.RESIDENT else redemption.merchant_id
    )
    if redemption is None or owner != owner_id:
        raise RedemptionNotFound(f"no redemption {redemption_id}")
    await _ensure_held(session, redemption)
    conn, voided = await _resolve_hold(
        session, redemption, "void", "the code had expired already; the points were released"
    )
    redemption.status, redemption.voided_at = RedemptionStatus.VOIDED.value, voided.timestamp
    redemption.voided_by = by.value
    await repository.return_stock(conn, {redemption.offer_id: 1})
    await session.flush()
    await events.emit(conn, EventType.REDEMPTION_VOIDED, [redemption])
    return redemption


async def refund(session: AsyncSession, merchant_id: uuid.UUID, redemption_id: uuid.UUID, reason: str) -> Redemption:
    """Give a captured redemption's points back to the resident, once, as a transfer linked to the capture."""
    redemption = await repository.redemption_for_update(session, redemption_id)
    if redemption is None or redemption.merchant_id != merchant_id:
        raise RedemptionNotFound(f"no redemption {redemption_id}")
    if redemption.status == RedemptionStatus.REFUNDED:
        raise AlreadyRefunded(f"refunded at {redemption.refunded_at.isoformat() if redemption.refunded_at else '?'}")
    if redemption.status != RedemptionStatus.CAPTURED:
        raise NotCaptured(f"this redemption is {redemption.status}")
    conn = await raw_connection(session)
    capture_id = uuid.uuid5(redemption.id, "capture")
    back = NewTransfer(
        id=uuid.uuid5(redemption.id, "refund"),
        debit_account_id=merchant_points_account(merchant_id).id,
        credit_account_id=resident_points_account(redemption.resident_id).id,
        amount=redemption.points,
        ledger=LedgerUnit.POINTS,
        code=TransferCode.REFUND,
        reference=f"redemption:{redemption.id}",
        metadata={"capture_transfer_id": str(capture_id), "reason": reason},
    )
    [refunded] = await apply_in_transaction(conn, [back])
    if refunded.result is CreateTransferResult.EXCEEDS_CREDITS:
        raise MerchantLacksPoints("the merchant's points account holds less than the refund")
    _require_applied(refunded)
    redemption.status, redemption.refunded_at = RedemptionStatus.REFUNDED.value, refunded.timestamp
    redemption.refund_reason = reason
    await session.flush()
    await events.emit(conn, EventType.REDEMPTION_REFUNDED, [redemption])
    return redemption


async def expire_due(session: AsyncSession, limit: int = 200) -> int:
    """Expire held redemptions past their time (a background job's transaction); returns how many."""
    due = await repository.due_holds(session, limit)
    if due:
        await _expire(await raw_connection(session), session, due)
    return len(due)


async def _ensure_held(session: AsyncSession, redemption: Redemption) -> None:
    """Refuse a change of a redemption that is no longer held, naming what became of it."""
    status = redemption.status
    if status == RedemptionStatus.HELD:
        return
    if status in (RedemptionStatus.CAPTURED, RedemptionStatus.REFUNDED):
        raise AlreadyCaptured(f"captured at {redemption.captured_at.isoformat() if redemption.captured_at else '?'}")
    if status == RedemptionStatus.VOIDED:
        raise CodeVoided(f"voided by the {redemption.voided_by}")
    raise CodeExpired("the code expired; the points were released")


async def _resolve_hold(
    session: AsyncSession, redemption: Redemption, resolution: str, expired_detail: str
) -> tuple[asyncpg.Connection, TransferOutcome]:
    """Post (``capture``) or void (``void``) the redemption's hold in the ledger; ``CodeExpired`` when the
    ledger's expiry released it first (the redemption is then marked expired)."""
    conn = await raw_connection(session)
    resolve = NewTransfer(
        id=uuid.uuid5(redemption.id, resolution),
        debit_account_id=None,
        credit_account_id=None,
        amount=None,
        ledger=None,
        code=TransferCode.REDEMPTION,
        reference=f"redemption:{redemption.id}",
        post_pending=resolution == "capture",
        void_pending=resolution == "void",
        pending_id=redemption.hold_transfer_id,
    )
    [outcome] = await apply_in_transaction(conn, [resolve])
    if outcome.result in _EXPIRED_IN_LEDGER:
        await _expire(conn, session, [redemption])
        raise CodeExpired(expired_detail)
    _require_applied(outcome)
    return conn, outcome


async def _expire(conn: asyncpg.Connection, session: AsyncSession, redemptions: Sequence[Redemption]) -> None:
    """Write (or find written) the expiry voids of these held redemptions, and mark them expired."""
    outcomes = await apply_in_transaction(conn, [expiry_void(r.hold_transfer_id) for r in redemptions])
    expired = []
    for redemption, outcome in zip(redemptions, outcomes, strict=True):
        if outcome.result not in (CreateTransferResult.OK, CreateTransferResult.EXISTS):
            continue  # not expired yet by the ledger's clock (or already resolved): left for a later round
        redemption.status, redemption.expired_at = RedemptionStatus.EXPIRED.value, outcome.timestamp
        expired.append(redemption)
    await repository.return_stock(conn, Counter(r.offer_id for r in expired))
    await session.flush()
    await events.emit(conn, EventType.REDEMPTION_EXPIRED, expired)


def _require_applied(outcome: TransferOutcome) -> None:
    if not outcome.applied:
        raise LedgerRefused(f"the ledger refused transfer {outcome.id}: {outcome.result.value}")
