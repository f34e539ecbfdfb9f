"""Crediting: turning credited actions into ledger transfers, written in the action's own transaction.

Each credited action gets two linked transfers whose ids derive from the action id, so a retry can
never credit twice: grams CO₂e from the resident's carbon account to the carbon pool, and (unless
the caps left none) points from issuance to the resident. They go through the ledger's
in-transaction path, so an action is ``credited`` if and only if its transfers exist.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from api.actions.errors import CreditFailed
from domain.methodologies import Reduction
from ledger import (
    CARBON_POOL,
    ISSUANCE_POINTS,
    SYSTEM_ACCOUNTS,
    LedgerUnit,
    NewAccount,
    NewTransfer,
    TransferCode,
    apply_in_transaction,
    resident_carbon_account,
    resident_points_account,
)


@dataclass(frozen=True, slots=True)
class Credit:
    """One action to credit: its reduction, and the points the caps left for it."""

    action_id: uuid.UUID
    resident_id: uuid.UUID
    reduction: Reduction
    points: int


def credit_transfers(action: uuid.UUID, resident_id: uuid.UUID, reduction: Reduction, points: int) -> list[NewTransfer]:
    """The linked transfers crediting one action; their ids derive from the action, so a retry cannot credit twice."""
    metadata = {
        "methodology": reduction.methodology_id,
        "methodology_version": reduction.methodology_version,
        "category": reduction.category,
        "factor": str(reduction.factor),
        "quantity": reduction.quantity,
        "grams_co2e": reduction.grams_co2e,
    }
    reference = f"action:{action}"
    co2e = NewTransfer(
        id=uuid.uuid5(action, "co2e"),
        debit_account_id=resident_carbon_account(resident_id).id,
        credit_account_id=CARBON_POOL.id,
        amount=reduction.grams_co2e,
        ledger=LedgerUnit.CO2E_G,
        code=TransferCode.ACTION_CREDIT,
        reference=reference,
        metadata=metadata,
        linked=points > 0,
    )
    if points <= 0:
        return [co2e]
    return [
        co2e,
        NewTransfer(
            id=uuid.uuid5(action, "points"),
            debit_account_id=ISSUANCE_POINTS.id,
            credit_account_id=resident_points_account(resident_id).id,
            amount=points,
            ledger=LedgerUnit.POINTS,
            code=TransferCode.ACTION_CREDIT,
            reference=reference,
            metadata=metadata,
        ),
    ]


def accounts_of(residents: set[uuid.UUID]) -> list[NewAccount]:
    """The accounts crediting these residents touches: the system accounts and each resident's two."""
    return [*SYSTEM_ACCOUNTS, *(f(r) for r in residents for f in (resident_points_account, resident_carbon_account))]


async def credit(conn: asyncpg.Connection, credits: Sequence[Credit]) -> None:
    """Write the transfers of ``credits`` in the caller's transaction.

    Any refusal aborts the transaction (nothing half-credited): ``LedgerConflict`` (``409 ledger_busy``)
    when a concurrent write won (retry the request), ``CreditFailed`` when the ledger refused a transfer.
    """
    if not credits:
        return
    transfers = [t for c in credits for t in credit_transfers(c.action_id, c.resident_id, c.reduction, c.points)]
    outcomes = await apply_in_transaction(conn, transfers, accounts=accounts_of({c.resident_id for c in credits}))
    refused = [o for o in outcomes if not o.applied]
    if refused:
        raise CreditFailed(f"the ledger refused transfer {refused[0].id}: {refused[0].result.value}")
