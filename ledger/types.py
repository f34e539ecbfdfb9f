"""Value types of the ledger's Python API: what callers submit and what they get back.

The semantics follow TigerBeetle's accounts and transfers: caller-chosen ids double as
idempotency keys, every transfer moves a positive integer amount from one account's debits to
another account's credits on the same ledger, and two-phase transfers reserve funds with
``pending`` and resolve them once with ``post_pending`` or ``void_pending``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

#: Largest amount one transfer may move; keeps every balance far inside PostgreSQL's bigint.
MAX_AMOUNT = 2**53
MAX_CODE_LENGTH = 64
MAX_REFERENCE_LENGTH = 200
MAX_OWNER_REF_LENGTH = 200
ZERO_ID = UUID(int=0)


class LedgerUnit(StrEnum):
    """The unit an account holds. Transfers never cross units."""

    POINTS = "points"
    CO2E_G = "co2e_g"


class AccountCode(StrEnum):
    """What kind of account this is (who owns it and why it exists)."""

    RESIDENT_POINTS = "resident_points"
    RESIDENT_CARBON = "resident_carbon"
    MERCHANT = "merchant"
    ISSUANCE = "issuance"
    REDEMPTION = "redemption"
    EXPIRY = "expiry"
    CARBON_POOL = "carbon_pool"
    EXCHANGE = "exchange"
    OPERATIONS = "operations"
    RECEIVABLE = "receivable"


class TransferCode(StrEnum):
    """Why a transfer happened."""

    ACTION_CREDIT = "action_credit"
    REDEMPTION = "redemption"
    REFUND = "refund"
    REVERSAL = "reversal"
    EXPIRY = "expiry"
    PENDING_EXPIRED = "pending_expired"
    EXPORT = "export"
    ADJUSTMENT = "adjustment"
    SETTLEMENT = "settlement"


class CreateAccountResult(StrEnum):
    OK = "ok"
    ID_MUST_NOT_BE_ZERO = "id_must_not_be_zero"
    FLAGS_ARE_MUTUALLY_EXCLUSIVE = "flags_are_mutually_exclusive"
    LEDGER_UNKNOWN = "ledger_unknown"
    CODE_MUST_NOT_BE_EMPTY = "code_must_not_be_empty"
    CODE_TOO_LONG = "code_too_long"
    OWNER_REF_TOO_LONG = "owner_ref_too_long"
    EXISTS_WITH_DIFFERENT_FLAGS = "exists_with_different_flags"
    EXISTS_WITH_DIFFERENT_LEDGER = "exists_with_different_ledger"
    EXISTS_WITH_DIFFERENT_CODE = "exists_with_different_code"
    EXISTS_WITH_DIFFERENT_OWNER_REF = "exists_with_different_owner_ref"
    EXISTS = "exists"


class CreateTransferResult(StrEnum):
    OK = "ok"
    LINKED_EVENT_FAILED = "linked_event_failed"
    LINKED_EVENT_CHAIN_OPEN = "linked_event_chain_open"
    ID_MUST_NOT_BE_ZERO = "id_must_not_be_zero"
    FLAGS_ARE_MUTUALLY_EXCLUSIVE = "flags_are_mutually_exclusive"
    DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO = "debit_account_id_must_not_be_zero"
    CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO = "credit_account_id_must_not_be_zero"
    ACCOUNTS_MUST_BE_DIFFERENT = "accounts_must_be_different"
    PENDING_ID_MUST_BE_ZERO = "pending_id_must_be_zero"
    PENDING_ID_MUST_NOT_BE_ZERO = "pending_id_must_not_be_zero"
    PENDING_ID_MUST_BE_DIFFERENT = "pending_id_must_be_different"
    TIMEOUT_RESERVED_FOR_PENDING_TRANSFER = "timeout_reserved_for_pending_transfer"
    TIMEOUT_MUST_NOT_BE_NEGATIVE = "timeout_must_not_be_negative"
    AMOUNT_MUST_NOT_BE_ZERO = "amount_must_not_be_zero"
    AMOUNT_EXCEEDS_MAXIMUM = "amount_exceeds_maximum"
    LEDGER_MUST_NOT_BE_ZERO = "ledger_must_not_be_zero"
    LEDGER_UNKNOWN = "ledger_unknown"
    CODE_MUST_NOT_BE_EMPTY = "code_must_not_be_empty"
    CODE_TOO_LONG = "code_too_long"
    REFERENCE_TOO_LONG = "reference_too_long"
    METADATA_MUST_BE_JSON_OBJECT = "metadata_must_be_json_object"
    EXISTS_WITH_DIFFERENT_FLAGS = "exists_with_different_flags"
    EXISTS_WITH_DIFFERENT_PENDING_ID = "exists_with_different_pending_id"
    EXISTS_WITH_DIFFERENT_TIMEOUT = "exists_with_different_timeout"
    EXISTS_WITH_DIFFERENT_DEBIT_ACCOUNT_ID = "exists_with_different_debit_account_id"
    EXISTS_WITH_DIFFERENT_CREDIT_ACCOUNT_ID = "exists_with_different_credit_account_id"
    EXISTS_WITH_DIFFERENT_AMOUNT = "exists_with_different_amount"
    EXISTS_WITH_DIFFERENT_REFERENCE = "exists_with_different_reference"
    EXISTS_WITH_DIFFERENT_METADATA = "exists_with_different_metadata"
    EXISTS_WITH_DIFFERENT_LEDGER = "exists_with_different_ledger"
    EXISTS_WITH_DIFFERENT_CODE = "exists_with_different_code"
    EXISTS = "exists"
    DEBIT_ACCOUNT_NOT_FOUND = "debit_account_not_found"
    CREDIT_ACCOUNT_NOT_FOUND = "credit_account_not_found"
    ACCOUNTS_MUST_HAVE_THE_SAME_LEDGER = "accounts_must_have_the_same_ledger"
    TRANSFER_MUST_HAVE_THE_SAME_LEDGER_AS_ACCOUNTS = "transfer_must_have_the_same_ledger_as_accounts"
    PENDING_TRANSFER_NOT_FOUND = "pending_transfer_not_found"
    PENDING_TRANSFER_NOT_PENDING = "pending_transfer_not_pending"
    PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID = "pending_transfer_has_different_debit_account_id"
    PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID = "pending_transfer_has_different_credit_account_id"
    PENDING_TRANSFER_HAS_DIFFERENT_LEDGER = "pending_transfer_has_different_ledger"
    PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT = "pending_transfer_has_different_amount"
    EXCEEDS_PENDING_TRANSFER_AMOUNT = "exceeds_pending_transfer_amount"
    PENDING_TRANSFER_ALREADY_POSTED = "pending_transfer_already_posted"
    PENDING_TRANSFER_ALREADY_VOIDED = "pending_transfer_already_voided"
    PENDING_TRANSFER_EXPIRED = "pending_transfer_expired"
    PENDING_TRANSFER_NOT_EXPIRED = "pending_transfer_not_expired"
    EXCEEDS_CREDITS = "exceeds_credits"
    EXCEEDS_DEBITS = "exceeds_debits"


@dataclass(frozen=True, slots=True)
class NewAccount:
    """An account to create. ``id`` is chosen by the caller and makes creation idempotent."""

    id: UUID
    ledger: LedgerUnit
    code: str
    owner_ref: str | None = None
    debits_must_not_exceed_credits: bool = False
    credits_must_not_exceed_debits: bool = False

    @property
    def constrained(self) -> bool:
        return self.debits_must_not_exceed_credits or self.credits_must_not_exceed_debits


@dataclass(frozen=True, slots=True)
class Account(NewAccount):
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class NewTransfer:
    """A transfer to create.

    For ``post_pending`` / ``void_pending`` the accounts, ledger and amount may be left ``None``:
    they are taken from the pending transfer (a post with no amount posts the full amount).
    ``timeout_s`` (pending only) is how long the reservation lives; 0 means until resolved.
    """

    id: UUID
    debit_account_id: UUID | None
    credit_account_id: UUID | None
    amount: int | None
    ledger: LedgerUnit | None
    code: str
    reference: str | None = None
    metadata: Mapping[str, Any] | None = None
    pending: bool = False
    post_pending: bool = False
    void_pending: bool = False
    linked: bool = False
    pending_id: UUID | None = None
    timeout_s: int = 0

    @property
    def resolves_pending(self) -> bool:
        return self.post_pending or self.void_pending


@dataclass(frozen=True, slots=True)
class Transfer:
    """A transfer as stored: every field resolved, plus the server's timestamp."""

    id: UUID
    debit_account_id: UUID
    credit_account_id: UUID
    amount: int
    ledger: LedgerUnit
    code: str
    reference: str | None
    metadata: Mapping[str, Any] | None
    pending: bool
    post_pending: bool
    void_pending: bool
    linked: bool
    pending_id: UUID | None
    timeout_s: int
    timestamp: datetime
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class TransferOutcome:
    """The result of one submitted transfer; ``timestamp`` is set for ``ok`` and ``exists``."""

    id: UUID
    result: CreateTransferResult
    timestamp: datetime | None = None

    @property
    def applied(self) -> bool:
        return self.result is CreateTransferResult.OK


@dataclass(frozen=True, slots=True)
class AccountOutcome:
    id: UUID
    result: CreateAccountResult


@dataclass(slots=True)
class Balance:
    """Debits and credits of one account, posted and pending, in the account's ledger unit."""

    debits_pending: int = 0
    debits_posted: int = 0
    credits_pending: int = 0
    credits_posted: int = 0

    @property
    def available_credit(self) -> int:
        """What a debit-limited account (e.g. a resident's points) may still spend."""
        return self.credits_posted - self.debits_posted - self.debits_pending

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.debits_pending, self.debits_posted, self.credits_pending, self.credits_posted)


@dataclass(frozen=True, slots=True)
class BalanceDrift:
    """An account whose stored balance differs from the one recomputed from its transfers."""

    account_id: UUID
    stored: Balance
    recomputed: Balance


@dataclass(frozen=True, slots=True)
class RecomputeReport:
    accounts_checked: int
    drifted: list[BalanceDrift] = field(default_factory=list)
    repaired: bool = False

    @property
    def ok(self) -> bool:
        return not self.drifted
