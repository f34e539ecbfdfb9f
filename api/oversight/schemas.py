"""Response bodies of the oversight routes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from msgspec import Struct, field

from api.oversight.jobs import status_of
from api.oversight.models import Job
from api.oversight.residents import ResidentPage
from ledger import Account, Balance, RunningEntry, SealedTransfer, Transfer


class TransferOut(Struct):
    id: UUID
    ledger: str
    code: str
    debit_account_id: UUID
    credit_account_id: UUID
    amount: int
    reference: str | None
    metadata: dict[str, Any] | None
    pending: bool
    post_pending: bool
    void_pending: bool
    linked: bool
    pending_id: UUID | None
    timestamp: datetime
    log_position: int | None = None

    @classmethod
    def of(cls, t: Transfer, position: int | None = None) -> TransferOut:
        return cls(
            t.id,
            t.ledger.value,
            t.code,
            t.debit_account_id,
            t.credit_account_id,
            t.amount,
            t.reference,
            dict(t.metadata) if t.metadata else None,
            t.pending,
            t.post_pending,
            t.void_pending,
            t.linked,
            t.pending_id,
            t.timestamp,
            position,
        )


class TransferPage(Struct):
    items: list[TransferOut]
    next_cursor: str | None

    @classmethod
    def of(cls, items: list[SealedTransfer], next_cursor: str | None) -> TransferPage:
        return cls([TransferOut.of(s.transfer, s.position) for s in items], next_cursor)


class BalanceOut(Struct):
    debits_pending: int
    debits_posted: int
    credits_pending: int
    credits_posted: int
    #: credits_posted − debits_posted
    net_posted: int

    @classmethod
    def of(cls, b: Balance) -> BalanceOut:
        return cls(
            b.debits_pending, b.debits_posted, b.credits_pending, b.credits_posted, b.credits_posted - b.debits_posted
        )


class AccountOut(Struct):
    id: UUID
    ledger: str
    code: str
    owner_ref: str | None
    debits_must_not_exceed_credits: bool
    credits_must_not_exceed_debits: bool
    created_at: datetime | None
    balance: BalanceOut
    #: The moment the balance is as of (null: now).
    at: datetime | None

    @classmethod
    def of(cls, a: Account, balance: Balance, at: datetime | None) -> AccountOut:
        return cls(
            a.id,
            a.ledger.value,
            a.code,
            a.owner_ref,
            a.debits_must_not_exceed_credits,
            a.credits_must_not_exceed_debits,
            a.created_at,
            BalanceOut.of(balance),
            at,
        )


class StatementEntryOut(Struct):
    transfer: TransferOut
    #: The account's balance just after this transfer.
    balance: BalanceOut

    @classmethod
    def of(cls, e: RunningEntry) -> StatementEntryOut:
        return cls(TransferOut.of(e.transfer, e.position), BalanceOut.of(e.balance))


class StatementPage(Struct):
    items: list[StatementEntryOut]
    next_cursor: str | None


class JobOut(Struct):
    id: UUID
    kind: str
    status: str
    done: int
    total: int | None
    requested_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    result: dict[str, Any] | None
    error: str | None

    @classmethod
    def of(cls, job: Job) -> JobOut:
        return cls(
            job.id,
            job.kind,
            status_of(job, datetime.now(UTC)),
            job.done,
            job.total,
            job.requested_by,
            job.created_at,
            job.started_at,
            job.finished_at,
            job.result,
            job.error,
        )


class ResidentBalances(Struct):
    points_available: int
    points_held: int
    points_earned: int
    points_spent: int
    #: Points the resident owes after a reversal found them spent; settled first from new credits.
    points_owed: int
    co2e_avoided_g: int


class ResidentPageOut(Struct):
    id: UUID
    created_at: datetime
    sign_in_methods: list[str]
    balances: ResidentBalances
    links: list[dict[str, Any]] = field(default_factory=list)
    recent_actions: list[dict[str, Any]] = field(default_factory=list)
    recent_redemptions: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def of(cls, page: ResidentPage) -> ResidentPageOut:
        r, p, c, owed = page.resident, page.points, page.carbon, page.receivable
        return cls(
            r.id,
            r.created_at,
            [m for m, linked in (("phone", r.phone_hash), ("city_id", r.idp_subject)) if linked],
            ResidentBalances(
                p.available_credit,
                p.debits_pending,
                p.credits_posted,
                p.debits_posted,
                owed.debits_posted - owed.credits_posted,
                c.debits_posted - c.credits_posted,
            ),
            [
                {
                    "id": link.id,
                    "partner_id": link.partner_id,
                    "partner_account_ref": link.partner_account_ref,
                    "created_at": link.created_at,
                }
                for link in page.links
            ],  # fmt: skip
            [
                {
                    "id": a.id,
                    "partner_id": a.partner_id,
                    "kind": a.kind,
                    "status": a.status,
                    "reason": a.reason,
                    "grams_co2e": a.grams_co2e,
                    "points": a.points,
                    "occurred_at": a.occurred_at,
                    "received_at": a.received_at,
                }
                for a in page.actions
            ],  # fmt: skip
            [
                {
                    "id": x.id,
                    "offer_id": x.offer_id,
                    "merchant_id": x.merchant_id,
                    "status": x.status,
                    "points": x.points,
                    "created_at": x.created_at,
                }
                for x in page.redemptions
            ],  # fmt: skip
        )
