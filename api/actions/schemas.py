"""Request and response bodies of the actions routes (never the table models themselves)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema
from msgspec import Meta, Struct

from api.actions.models import Action, PartnerLink
from api.actions.views import ActionDetail, Impact, Provenance, ResidentBalance
from api.methodologies import SourceOut
from domain.actions import (
    COMMON_FIELDS,
    MAX_BATCH,
    RECORD_FIELDS,
    ActionKind,
    FieldType,
    RecordField,
)
from domain.decision import Decision
from domain.text import ID_PATTERN, ID_RULE, MAX_ID_LENGTH
from ledger import Entry

#: A partner's identifier of an account or a record (``domain.text``).
Ref = Annotated[str, Meta(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN, description=ID_RULE)]


class NewLink(Struct, forbid_unknown_fields=True):
    partner_id: UUID
    partner_account_ref: Ref
    link_code: Annotated[str, Meta(min_length=1, max_length=64, description="The code the partner's app shows")]


class LinkOut(Struct):
    id: UUID
    partner_id: UUID
    partner_account_ref: str
    created_at: datetime

    @classmethod
    def of(cls, link: PartnerLink) -> LinkOut:
        return cls(link.id, link.partner_id, link.partner_account_ref, link.created_at)


class NewClaim(Struct, forbid_unknown_fields=True):
    partner_id: UUID
    external_id: Ref


class RecordResultOut(Struct):
    """One record's outcome: credited, duplicate, rejected (with a reason code) or pending_review."""

    index: int
    outcome: str
    external_id: str | None = None
    action_id: UUID | None = None
    reason: str | None = None
    detail: str | None = None
    grams_co2e: int = 0
    points: int = 0
    points_withheld: int = 0
    cap_reason: str | None = None
    methodology_id: str | None = None
    methodology_version: int | None = None

    @classmethod
    def of(cls, r: Decision) -> RecordResultOut:
        return cls(
            index=r.index,
            outcome=r.outcome.value,
            external_id=r.external_id,
            action_id=r.action_id,
            reason=r.reason,
            detail=r.detail,
            grams_co2e=r.grams_co2e,
            points=r.points,
            points_withheld=r.points_withheld,
            cap_reason=r.cap_reason,
            methodology_id=r.methodology_id,
            methodology_version=r.methodology_version,
        )


class BatchResult(Struct):
    results: list[RecordResultOut]
    credited: int
    duplicate: int
    rejected: int
    pending_review: int

    @classmethod
    def of(cls, results: list[Decision]) -> BatchResult:
        out = [RecordResultOut.of(r) for r in results]
        counts = {
            k: sum(1 for r in out if r.outcome == k) for k in ("credited", "duplicate", "rejected", "pending_review")
        }
        return cls(results=out, **counts)


class ActionOut(Struct):
    id: UUID
    partner_id: UUID
    external_id: str
    kind: str
    category: str
    quantity: int
    occurred_at: datetime
    status: str
    reason: str | None
    grams_co2e: int
    points: int
    points_withheld: int
    cap_reason: str | None
    methodology_id: str | None
    methodology_version: int | None
    factor: str | None
    source: str
    received_at: datetime
    decided_at: datetime | None

    @classmethod
    def of(cls, a: Action) -> ActionOut:
        return cls(
            a.id,
            a.partner_id,
            a.external_id,
            a.kind,
            a.category,
            a.quantity,
            a.occurred_at,
            a.status,
            a.reason,
            a.grams_co2e,
            a.points,
            a.points_withheld,
            a.cap_reason,
            a.methodology_id,
            a.methodology_version,
            a.factor,
            a.source,
            a.received_at,
            a.decided_at,
        )


class ProvenanceOut(Struct):
    """What a credit was reckoned with, enough to recompute it by hand: ``working`` is the formula with the
    action's numbers in it."""

    methodology_id: str
    methodology_version: int
    title: str
    formula: str
    activity_unit: str
    #: Activity units per unit of the factor (1000 metres per km, 1000 grams per kg, 1 item).
    per_factor_unit: int
    category: str
    quantity: int
    #: The factor the credit used (as stored with the action).
    factor: str
    factor_unit: str
    derivation: str
    sources: list[SourceOut]
    working: str
    grams_co2e: int
    points_per_kg_co2e: str
    points_working: str

    @classmethod
    def of(cls, p: Provenance, action: Action) -> ProvenanceOut:
        m = p.methodology
        return cls(
            m.id,
            m.version,
            m.title,
            m.formula,
            m.activity_unit,
            m.per_factor_unit,
            action.category,
            action.quantity,
            str(p.factor_used),
            p.factor.unit,
            p.factor.derivation,
            [SourceOut.of(source) for source in p.factor.sources],
            p.working,
            action.grams_co2e,
            str(p.points_per_kg),
            p.points_working,
        )


class ActionDetailOut(Struct):
    action: ActionOut
    #: Null for an action that was not credited: nothing was reckoned.
    provenance: ProvenanceOut | None

    @classmethod
    def of(cls, detail: ActionDetail) -> ActionDetailOut:
        a = detail.action
        return cls(ActionOut.of(a), ProvenanceOut.of(detail.provenance, a) if detail.provenance else None)


class ActionPage(Struct):
    items: list[ActionOut]
    next_cursor: str | None


class ReviewItem(Struct):
    action: ActionOut
    resident_id: UUID
    account_ref: str
    record: dict[str, Any]


class ReviewDecision(Struct, forbid_unknown_fields=True):
    decision: Literal["approve", "reject"]
    reason: Annotated[str, Meta(min_length=1, max_length=500)]


class BalanceOut(Struct):
    points_available: int
    points_held: int
    points_earned: int
    points_spent: int
    co2e_avoided_g: int

    @classmethod
    def of(cls, b: ResidentBalance) -> BalanceOut:
        return cls(b.points_available, b.points_held, b.points_earned, b.points_spent, b.co2e_avoided_g)


class StatementLineOut(Struct):
    transfer_id: UUID
    timestamp: datetime
    ledger: str
    code: str
    amount: int
    direction: str
    reference: str | None
    pending: bool

    @classmethod
    def of(cls, entry: Entry) -> StatementLineOut:
        direction = "credit" if entry.credit else "debit"
        return cls(
            entry.transfer_id,
            entry.timestamp,
            entry.ledger,
            entry.code,
            entry.amount,
            direction,
            entry.reference,
            entry.pending,
        )


class StatementPage(Struct):
    items: list[StatementLineOut]
    next_cursor: str | None


class MonthImpact(Struct):
    month: str
    kind: str
    co2e_avoided_g: int


class ImpactOut(Struct):
    co2e_avoided_g: int
    by_kind: dict[str, int]
    by_month: list[MonthImpact]

    @classmethod
    def of(cls, i: Impact) -> ImpactOut:
        return cls(i.total_g, i.by_kind, [MonthImpact(m, k, g) for m, k, g in i.by_month])


_TITLES = {
    ActionKind.TRANSIT: "Transit trip",
    ActionKind.RECYCLING: "Recyclables drop-off",
    ActionKind.SECOND_HAND: "Second-hand trade",
}


#: How a record's names are described (``domain.text`` refuses the rest).
NAME_RULE = "no control, format (bidi, zero-width, BOM) or noncharacter code points"


def _field_schema(spec: RecordField) -> Schema:
    if spec.type is FieldType.INTEGER:
        return Schema(
            type=OpenAPIType.INTEGER, minimum=spec.minimum, maximum=spec.maximum, description=spec.description
        )
    if spec.type is FieldType.INSTANT:
        return Schema(type=OpenAPIType.STRING, format="date-time", description=spec.description)  # type: ignore[arg-type]
    identifier = spec.type is FieldType.ID
    return Schema(
        type=OpenAPIType.STRING,
        min_length=1,
        max_length=spec.max_length,
        pattern=ID_PATTERN if identifier else None,
        enum=[choice.value for choice in spec.choices] if spec.choices is not None else None,
        description=f"{spec.description} ({ID_RULE if identifier else NAME_RULE})",
    )


def _record_schema(kind: ActionKind) -> Schema:
    """A record of ``kind`` as ``domain.actions.parse_record`` reads it, from the same field table."""
    fields = (*COMMON_FIELDS, *RECORD_FIELDS[kind])
    return Schema(
        title=_TITLES[kind],
        type=OpenAPIType.OBJECT,
        properties={spec.name: _field_schema(spec) for spec in fields},
        required=[spec.name for spec in fields if spec.required],
    )


#: The push body as OpenAPI sees it; the route reads the raw bytes, because the signature covers them.
PUSH_BODY = RequestBody(
    required=True,
    description="Records are decided one by one: a malformed record is rejected with its reason, the rest still count.",
    content={
        "application/json": OpenAPIMediaType(
            schema=Schema(
                type=OpenAPIType.OBJECT,
                required=["records"],
                properties={
                    "records": Schema(
                        type=OpenAPIType.ARRAY,
                        min_items=1,
                        max_items=MAX_BATCH,
                        items=Schema(one_of=[_record_schema(kind) for kind in ActionKind]),
                    )
                },
            )
        )
    },
)


@dataclass
class PushOperation(Operation):
    """The push route's OpenAPI operation, with the body it reads raw."""

    def __post_init__(self) -> None:
        self.request_body = PUSH_BODY
