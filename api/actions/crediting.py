"""Crediting: turning credited actions into ledger transfers, written in the action's own transaction.

Each credited action is one linked chain of transfers whose ids derive from the action id, so a
retry can never credit twice: grams CO₂e from the resident's carbon account to the carbon pool; then,
unless the caps left none, points from issuance to the resident; then, if the resident owes points
(a reversal found them spent: ``reversals``), as much of the new points as settles the debt, from the
resident to their receivable account. Credits settle a debt first, oldest debt first, before the
resident can spend them. The chains go through the ledger's in-transaction path, so an action is
``credited`` if and only if its transfers exist.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from api.actions.errors import CreditFailed
from domain.methodologies import Reduction
from ledger import (
    CARBON_POOL,
    ISSUANCE_POINTS,
    SYSTEM_ACCOUNTS,
    CreateTransferResult,
    LedgerUnit,
    NewAccount,
    NewTransfer,
    TransferCode,
    apply_in_transaction,
    get_balances,
    resident_carbon_account,
    resident_points_account,
    resident_receivable_account,
)


@dataclass(frozen=True, slots=True)
class Credit:
    """One action to credit: its reduction, and the points the caps left for it."""

    action_id: uuid.UUID
    resident_id: uuid.UUID
    reduction: Reduction
    points: int


@dataclass(frozen=True, slots=True)
class Credited:
    """What writing the credits found: when each was written, and which a concurrent submission wrote first."""

    at: dict[uuid.UUID, datetime]
    written_before: set[uuid.UUID]


def co2e_transfer_id(action_id: uuid.UUID) -> uuid.UUID:
    """The id of the transfer that credits an action's grams CO₂e (its proof of inclusion proves the credit)."""
    return uuid.uuid5(action_id, "co2e")


def credit_transfers(
    action: uuid.UUID, resident_id: uuid.UUID, reduction: Reduction, points: int, settle: int = 0
) -> list[NewTransfer]:
    """The linked chain crediting one action (``settle``: points of it that go to the resident's debt)."""
    metadata = {
        "methodology": reduction.methodology_id,
        "methodology_version": reduction.methodology_version,
        "category": reduction.category,
        "factor": str(reduction.factor),
        "quantity": reduction.quantity,
        "grams_co2e": reduction.grams_co2e,
    }
    reference = f"action:{action}"
    chain = [
        NewTransfer(
            id=co2e_transfer_id(action),
            debit_account_id=resident_carbon_account(resident_id).id,
            credit_account_id=CARBON_POOL.id,
            amount=reduction.grams_co2e,
            ledger=LedgerUnit.CO2E_G,
            code=TransferCode.ACTION_CREDIT,
            reference=reference,
            metadata=metadata,
            linked=points > 0,
        )
    ]
    if points > 0:
        chain.append(
            NewTransfer(
                id=uuid.uuid5(action, "points"),
                debit_account_id=ISSUANCE_POINTS.id,
                credit_account_id=resident_points_account(resident_id).id,
                amount=points,
                ledger=LedgerUnit.POINTS,
                code=TransferCode.ACTION_CREDIT,
                reference=reference,
                metadata=metadata,
                linked=settle > 0,
            )
        )
    if settle > 0:
        chain.append(
            NewTransfer(
                id=uuid.uuid5(action, "settlement"),
                debit_account_id=resident_points_account(resident_id).id,
                credit_account_id=resident_receivable_account(resident_id).id,
                amount=settle,
                ledger=LedgerUnit.POINTS,
                code=TransferCode.SETTLEMENT,
                reference=reference,
            )
        )
    return chain


def accounts_of(residents: set[uuid.UUID]) -> list[NewAccount]:
    """The accounts crediting these residents touches: the system accounts and each resident's two."""
    return [*SYSTEM_ACCOUNTS, *(f(r) for r in residents for f in (resident_points_account, resident_carbon_account))]


async def owed_points(conn: asyncpg.Connection, residents: set[uuid.UUID]) -> dict[uuid.UUID, int]:
    """Points each of these residents owes (their receivable's debits not yet settled), when any."""
    accounts = {resident_receivable_account(r).id: r for r in residents}
    balances = await get_balances(conn, list(accounts))
    owed = {accounts[a]: b.debits_posted - b.credits_posted for a, b in balances.items()}
    return {r: points for r, points in owed.items() if points > 0}


async def credit(conn: asyncpg.Connection, credits: Sequence[Credit]) -> Credited:
    """Write the chains of ``credits`` in the caller's transaction.

    An action whose chain a concurrent submission wrote first (the same transfers, ``exists``) is
    reported in ``written_before``; any other refusal aborts the transaction (nothing half-credited):
    ``LedgerConflict`` (``409 ledger_busy``) when a concurrent write won, ``CreditFailed`` when the ledger
    refused a transfer.
    """
    if not credits:
        return Credited({}, set())
    owed = await owed_points(conn, {c.resident_id for c in credits if c.points > 0})
    chains = []
    for c in credits:
        settle = min(c.points, owed.get(c.resident_id, 0))
        if settle:
            owed[c.resident_id] -= settle
        chains.append(credit_transfers(c.action_id, c.resident_id, c.reduction, c.points, settle))
    transfers = [t for chain in chains for t in chain]
    outcomes = iter(await apply_in_transaction(conn, transfers, accounts=accounts_of({c.resident_id for c in credits})))
    at: dict[uuid.UUID, datetime] = {}
    written_before: set[uuid.UUID] = set()
    for c, chain in zip(credits, chains, strict=True):
        results = [next(outcomes) for _ in chain]
        if all(o.result is CreateTransferResult.EXISTS for o in results):
            written_before.add(c.action_id)
        elif not all(o.applied for o in results):
            refused = next(o for o in results if not o.applied)
            raise CreditFailed(f"the ledger refused transfer {refused.id}: {refused.result.value}")
        assert results[0].timestamp is not None
        at[c.action_id] = results[0].timestamp
    return Credited(at, written_before)
