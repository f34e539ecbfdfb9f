"""Reversing a credited action (fraud found after the fact): compensating transfers in both ledgers.

One linked chain, with ids derived from the action, in the action's own transaction:

1. its grams CO₂e go back from the carbon pool to the resident's carbon account, so the resident's
   avoided grams (``/v1/me/impact``, the balance) drop by them;
2. its points go back to issuance from the resident's points, as far as the resident's available
   points cover them (a balance never goes below zero);
3. the rest, if the resident spent them, is debited to the resident's receivable account: a debt
   that later credits settle first (``crediting``), before the resident can spend them.

Reversing an action twice answers the first reversal. An action already handed to the carbon
exchange is reversed alike; the next exchange batch carries it as a negative adjustment.
"""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from api.actions import repository
from api.actions.errors import ActionNotFound, CreditFailed, NotReversible
from api.actions.models import ActionReversal
from api.audit_log import Actor, record
from api.database import raw_connection
from api.request_meta import RequestMeta
from domain.actions import ActionStatus
from ledger import (
    CARBON_POOL,
    ISSUANCE_POINTS,
    LedgerUnit,
    NewTransfer,
    TransferCode,
    apply_in_transaction,
    get_balances,
    resident_carbon_account,
    resident_points_account,
    resident_receivable_account,
)


def reversal_co2e_transfer_id(action_id: uuid.UUID) -> uuid.UUID:
    """The id of the transfer that takes an action's grams CO₂e back from the carbon pool."""
    return uuid.uuid5(action_id, "reverse-co2e")


def reversal_transfers(
    action_id: uuid.UUID, resident_id: uuid.UUID, grams: int, recovered: int, owed: int, reason: str
) -> list[NewTransfer]:
    """The linked chain reversing one action's credit (see the module's docstring)."""
    legs = [
        ("reverse-co2e", CARBON_POOL.id, resident_carbon_account(resident_id).id, grams, LedgerUnit.CO2E_G),
        ("reverse-points", resident_points_account(resident_id).id, ISSUANCE_POINTS.id, recovered, LedgerUnit.POINTS),
        ("reverse-owed", resident_receivable_account(resident_id).id, ISSUANCE_POINTS.id, owed, LedgerUnit.POINTS),
    ]
    legs = [leg for leg in legs if leg[3] > 0]
    metadata = {"reversal": True, "reason": reason}
    return [
        NewTransfer(
            uuid.uuid5(action_id, name),
            debit,
            credit,
            amount,
            unit,
            TransferCode.REVERSAL,
            reference=f"action:{action_id}",
            metadata=metadata,
            linked=i < len(legs) - 1,
        )
        for i, (name, debit, credit, amount, unit) in enumerate(legs)
    ]


async def reverse(
    session: AsyncSession, actor: Actor, action_id: uuid.UUID, reason: str, meta: RequestMeta
) -> ActionReversal:
    """Reverse a credited action (audited); a reversed one answers its reversal again."""
    conn = await raw_connection(session)
    resident_id = await repository.resident_of_action(conn, action_id)
    if resident_id is None:
        raise ActionNotFound(f"no action {action_id}")
    await repository.lock_residents(conn, [resident_id])  # crediting settles debts under the same lock
    action = await repository.action_for_update(session, action_id)
    if action.status == ActionStatus.REVERSED:
        earlier = await session.get(ActionReversal, action_id)
        assert earlier is not None
        return earlier
    if action.status != ActionStatus.CREDITED:
        raise NotReversible(f"this action is {action.status}; only a credited action can be reversed")
    points_account = resident_points_account(resident_id)
    balance = (await get_balances(conn, [points_account.id])).get(points_account.id)
    available = balance.available_credit if balance else 0
    recovered = min(action.points, max(0, available))
    owed = action.points - recovered
    chain = reversal_transfers(action.id, resident_id, action.grams_co2e, recovered, owed, reason)
    accounts = [CARBON_POOL, ISSUANCE_POINTS, points_account, resident_carbon_account(resident_id)]
    if owed:
        accounts.append(resident_receivable_account(resident_id))
    outcomes = await apply_in_transaction(conn, chain, accounts=accounts)
    refused = [o for o in outcomes if not o.applied]
    if refused:
        raise CreditFailed(f"the ledger refused transfer {refused[0].id}: {refused[0].result.value}")
    assert outcomes[0].timestamp is not None
    reversal = ActionReversal(
        action_id=action.id,
        operator_id=actor.operator_id,
        reason=reason,
        grams_co2e=action.grams_co2e,
        points=action.points,
        points_recovered=recovered,
        points_owed=owed,
        reversed_at=outcomes[0].timestamp,
    )
    session.add(reversal)
    action.status = ActionStatus.REVERSED.value
    await session.flush()
    await record(
        session,
        actor,
        "action.reverse",
        "action",
        str(action.id),
        {"reason": reason, "grams_co2e": action.grams_co2e, "points_recovered": recovered, "points_owed": owed},
        meta,
    )
    return reversal
