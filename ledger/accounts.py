"""The programme's well-known accounts and each resident's accounts, with ids derived, not stored.

Every service that touches a resident's points (crediting now; redemption, reversal and expiry
later) derives the same account ids from the resident id, so no lookup table is needed and the
ids are stable across retries and processes. System accounts have fixed ids.
"""

from __future__ import annotations

import uuid
from functools import lru_cache

from ledger.types import AccountCode, LedgerUnit, NewAccount

ACCOUNT_NAMESPACE = uuid.UUID("0b8f3a4e-5b0c-4c47-a7c8-4e3d5f1f2a90")

#: Points are issued from here to residents (its debits are all points ever issued).
ISSUANCE_POINTS = NewAccount(
    id=uuid.uuid5(ACCOUNT_NAMESPACE, "system:issuance:points"),
    ledger=LedgerUnit.POINTS,
    code=AccountCode.ISSUANCE,
    owner_ref="system:issuance",
)
#: The platform's pool of verified reductions (grams CO₂e), the stock that is later exported.
CARBON_POOL = NewAccount(
    id=uuid.uuid5(ACCOUNT_NAMESPACE, "system:carbon_pool:co2e_g"),
    ledger=LedgerUnit.CO2E_G,
    code=AccountCode.CARBON_POOL,
    owner_ref="system:carbon_pool",
)
#: Reductions handed to the carbon exchange (grams CO₂e): its credits are everything exported.
EXCHANGE = NewAccount(
    id=uuid.uuid5(ACCOUNT_NAMESPACE, "system:exchange:co2e_g"),
    ledger=LedgerUnit.CO2E_G,
    code=AccountCode.EXCHANGE,
    owner_ref="system:exchange",
)
SYSTEM_ACCOUNTS = (ISSUANCE_POINTS, CARBON_POOL)


@lru_cache(maxsize=65536)  # a UUIDv5 is a SHA-1; a batch names each of its residents many times
def resident_points_account(resident_id: uuid.UUID) -> NewAccount:
    """A resident's spendable points; never below zero."""
    return NewAccount(
        id=uuid.uuid5(ACCOUNT_NAMESPACE, f"resident:{resident_id}:points"),
        ledger=LedgerUnit.POINTS,
        code=AccountCode.RESIDENT_POINTS,
        owner_ref=f"resident:{resident_id}",
        debits_must_not_exceed_credits=True,
    )


@lru_cache(maxsize=65536)
def resident_carbon_account(resident_id: uuid.UUID) -> NewAccount:
    """Grams of CO₂e a resident avoided: its debits are what it handed to the carbon pool."""
    return NewAccount(
        id=uuid.uuid5(ACCOUNT_NAMESPACE, f"resident:{resident_id}:co2e_g"),
        ledger=LedgerUnit.CO2E_G,
        code=AccountCode.RESIDENT_CARBON,
        owner_ref=f"resident:{resident_id}",
    )


@lru_cache(maxsize=65536)
def merchant_points_account(merchant_id: uuid.UUID) -> NewAccount:
    """Points a merchant received for redemptions; a refund can give back no more than it received."""
    return NewAccount(
        id=uuid.uuid5(ACCOUNT_NAMESPACE, f"merchant:{merchant_id}:points"),
        ledger=LedgerUnit.POINTS,
        code=AccountCode.MERCHANT,
        owner_ref=f"merchant:{merchant_id}",
        debits_must_not_exceed_credits=True,
    )


@lru_cache(maxsize=65536)
def resident_receivable_account(resident_id: uuid.UUID) -> NewAccount:
    """Points a resident owes the programme: what a reversal could not take back because they were spent.

    Its debits are what was owed, its credits what was settled from later credits; it is never settled
    beyond what is owed (credits may not exceed debits).
    """
    return NewAccount(
        id=uuid.uuid5(ACCOUNT_NAMESPACE, f"resident:{resident_id}:receivable"),
        ledger=LedgerUnit.POINTS,
        code=AccountCode.RECEIVABLE,
        owner_ref=f"resident:{resident_id}",
        credits_must_not_exceed_debits=True,
    )
