"""Response bodies of the operators' action routes: lists, trails, reversals and reduction statistics."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from msgspec import Meta, Struct, field

from api.actions.models import ActionReversal
from api.actions.oversight import Trail
from api.actions.schemas import ActionOut
from api.actions.stats import ReductionGroup
from api.methodologies import SourceOut


class Reverse(Struct, forbid_unknown_fields=True):
    reason: Annotated[str, Meta(min_length=1, max_length=500)]


class ReversalOut(Struct):
    action_id: UUID
    status: str
    reason: str
    grams_co2e: int
    points: int
    #: Taken back from the resident's available points.
    points_recovered: int
    #: Spent already: owed by the resident, settled first from their next credits.
    points_owed: int
    reversed_at: datetime

    @classmethod
    def of(cls, r: ActionReversal) -> ReversalOut:
        return cls(
            r.action_id, "reversed", r.reason, r.grams_co2e, r.points, r.points_recovered, r.points_owed, r.reversed_at
        )


class OperatorActionOut(Struct):
    action: ActionOut
    resident_id: UUID
    account_ref: str


class OperatorActionPage(Struct):
    items: list[OperatorActionOut]
    next_cursor: str | None


class RuleOut(Struct):
    rule: str
    outcome: str
    detail: str | None


class MethodologyUsed(Struct):
    id: str
    version: int
    category: str
    factor: str | None
    unit: str | None
    derivation: str | None
    sources: list[SourceOut]


class TransferOut(Struct):
    id: UUID
    ledger: str
    code: str
    debit_account_id: UUID
    credit_account_id: UUID
    amount: int
    linked: bool
    timestamp: datetime
    log_position: int | None
    #: Where to get its inclusion proof, once it is covered by a signed checkpoint.
    inclusion_proof: str | None


class TrailOut(Struct):
    action: ActionOut
    resident_id: UUID
    account_ref: str
    record: dict[str, Any]
    rules: list[RuleOut]
    methodology: MethodologyUsed | None
    review: dict[str, Any] | None
    reversal: ReversalOut | None
    transfers: list[TransferOut]

    @classmethod
    def of(cls, t: Trail) -> TrailOut:
        a = t.action
        methodology = None
        if t.methodology is not None:
            f = t.factor
            methodology = MethodologyUsed(
                t.methodology.id,
                t.methodology.version,
                a.category,
                str(f.value) if f else a.factor,
                f.unit if f else None,
                f.derivation if f else None,
                [SourceOut.of(s) for s in f.sources] if f else [],
            )
        review = None
        if t.review is not None:
            review = {"decision": t.review.decision, "reason": t.review.reason, "at": t.review.at.isoformat()}
        transfers = []
        for transfer, position in t.transfers:
            covered = position is not None and t.proof_tree_size is not None and position < t.proof_tree_size
            proof = f"/v1/ledger/proofs/inclusion?transfer_id={transfer.id}&tree_size={t.proof_tree_size}"
            transfers.append(
                TransferOut(
                    transfer.id,
                    transfer.ledger.value,
                    transfer.code,
                    transfer.debit_account_id,
                    transfer.credit_account_id,
                    transfer.amount,
                    transfer.linked,
                    transfer.timestamp,
                    position,
                    proof if covered else None,
                )
            )
        return cls(
            ActionOut.of(a),
            a.resident_id,
            a.account_ref,
            a.record,
            [RuleOut(r.rule, r.outcome, r.detail) for r in t.rules],
            methodology,
            review,
            ReversalOut.of(t.reversal) if t.reversal else None,
            transfers,
        )


class ReductionGroupOut(Struct):
    key: str
    grams_co2e: int
    actions_credited: int
    actions_reversed: int
    points_issued: int

    @classmethod
    def of(cls, g: ReductionGroup) -> ReductionGroupOut:
        return cls(g.key, g.grams_co2e, g.actions_credited, g.actions_reversed, g.points_issued)


class ReductionStats(Struct):
    """Groups of the period, and their totals: the grams equal the carbon pool's action credits less its
    reversals over the period."""

    group_by: str
    start: datetime = field(name="from")
    end: datetime = field(name="to")
    groups: list[ReductionGroupOut] = field(default_factory=list)
    total: ReductionGroupOut | None = None
