"""Low-carbon actions: the records partners report, and how one is judged before it is credited.

A record is parsed from the partner's JSON into an ``ActionRecord`` (or refused with a reason
code), then ``assess`` applies the anti-fraud rules and the methodology valid on the day the
action happened. What depends on stored state (earlier trips, caps, a partner's usual volume) is
passed in, so that pushes, claims and operator reviews all decide the same way.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from enum import StrEnum
from typing import Any

from domain.errors import InvalidInput
from domain.fraud import (
    Refusal,
    TransitMode,
    Trip,
    TripHistory,
    check_against_earlier,
    check_drop_off,
    check_time,
    check_trip,
)
from domain.identity import PartnerKind
from domain.methodologies import MethodologyNotFound, MethodologyRegistry, NotCreditable, Reduction
from domain.text import id_problem, name_problem

ActionKind = PartnerKind

#: Namespace of action ids: uuid5 of "<partner id>:<external id>", so a record has one id however it arrives.
ACTION_NAMESPACE = uuid.UUID("6f1c1a52-0d7e-4f0a-9a55-3c6c0a4e5b11")
MAX_EXTERNAL_ID = 128
MAX_BATCH = 1000
#: The largest integer a record may carry: far beyond every plausibility bound (those refuse with their
#: own reason codes), and small enough that no reduction or point computed from it overflows storage.
MAX_RECORD_INTEGER = 1_000_000_000
#: What the stored copy of a record (JSONB) cannot hold anywhere, in any field: NUL and lone surrogates.
_UNSTORABLE_CHARACTERS = re.compile("[\x00\ud800-\udfff]")
#: How deeply a record's JSON may nest (the documented fields are flat; undefined fields are refused).
MAX_RECORD_DEPTH = 16


class ActionStatus(StrEnum):
    CREDITED = "credited"
    REJECTED = "rejected"
    PENDING_REVIEW = "pending_review"
    #: Credited, then taken back by an operator (fraud): compensating transfers undid the credit.
    REVERSED = "reversed"


class Outcome(StrEnum):
    """What happened to one submitted record (the per-record result of a push or claim)."""

    CREDITED = "credited"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"
    PENDING_REVIEW = "pending_review"


class Reason(StrEnum):
    """Reason codes besides the anti-fraud ``Refusal`` codes and the methodologies' exclusion reasons."""

    INVALID_RECORD = "invalid_record"
    WRONG_KIND = "wrong_kind"
    ACCOUNT_NOT_LINKED = "account_not_linked"
    UNKNOWN_CATEGORY = "unknown_category"
    NO_METHODOLOGY = "no_methodology"
    NO_REDUCTION = "no_reduction"
    PARTNER_VOLUME_ANOMALY = "partner_volume_anomaly"
    REJECTED_BY_OPERATOR = "rejected_by_operator"
    #: The receiving side's record of a trade: the giving side is credited for it (``attribution``).
    TRADE_CREDITED_TO_GIVER = "trade_credited_to_giver"
    #: A trade already credited (or held for review) on another record.
    TRADE_ALREADY_CREDITED = "trade_already_credited"


class SecondHandTrade(StrEnum):
    """Which side of a trade a second-hand record describes."""

    SOLD = "sold"
    BOUGHT = "bought"
    DONATED = "donated"
    RECEIVED = "received"


#: The sides of a trade that are credited for it: the seller of a sale, the donor of a donation. The
#: receiving side is not, so that one traded item is one reduction whichever side's record comes first;
#: the giver is chosen because the recipient of a donation is often an organisation, not a resident.
GIVING_SIDES = frozenset({SecondHandTrade.SOLD, SecondHandTrade.DONATED})


class InvalidRecord(InvalidInput):
    code = "invalid_record"
    title = "The record is not valid"


def action_id(partner_id: uuid.UUID, external_id: str) -> uuid.UUID:
    return uuid.uuid5(ACTION_NAMESPACE, f"{partner_id}:{external_id}")


@dataclass(frozen=True)
class ActionRecord:
    """One partner record, validated. ``quantity`` is in the methodology's activity unit."""

    external_id: str
    account_ref: str
    kind: ActionKind
    category: str
    quantity: int
    occurred_at: datetime
    started_at: datetime | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def activity_at(self) -> datetime:
        """When the activity happened, for choosing the methodology in force: a trip's start, else its time."""
        return self.started_at or self.occurred_at

    @property
    def trade_ref(self) -> str | None:
        """The platform's id of the trade a second-hand record describes (the same on both sides' records)."""
        return self.details.get("trade_ref")

    def trip(self) -> Trip:
        assert self.started_at is not None
        return Trip(TransitMode(self.category), self.started_at, self.occurred_at, self.quantity)


class FieldType(StrEnum):
    #: An external identifier (``domain.text``: a small ASCII alphabet).
    ID = "id"
    #: A name: any language, nothing invisible (``domain.text``).
    TEXT = "text"
    INTEGER = "integer"
    INSTANT = "instant"


@dataclass(frozen=True)
class RecordField:
    """One field of a partner record: what ``parse_record`` checks, and what the API documents of it."""

    name: str
    type: FieldType
    description: str
    required: bool = True
    minimum: int = 0
    maximum: int = MAX_RECORD_INTEGER
    max_length: int = MAX_EXTERNAL_ID
    choices: type[StrEnum] | None = None

    def read(self, raw: dict[str, Any]) -> Any:
        """The field's checked value (None for an absent optional field); raises ``InvalidRecord`` naming it."""
        value = raw.get(self.name)
        if value is None and not self.required:
            return None
        if self.type is FieldType.INTEGER:
            if isinstance(value, bool) or not isinstance(value, int) or not self.minimum <= value <= self.maximum:
                raise InvalidRecord(
                    f"{self.name} must be an integer from {self.minimum} to {self.maximum}", field=self.name
                )
            return value
        if self.type is FieldType.INSTANT:
            try:
                parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
            except ValueError:
                parsed = None
            if parsed is None or parsed.tzinfo is None:
                raise InvalidRecord(f"{self.name} must be an ISO 8601 time with a UTC offset", field=self.name)
            return parsed.astimezone(UTC)
        if not isinstance(value, str) or not value.strip() or len(value) > self.max_length:
            raise InvalidRecord(
                f"{self.name} must be a non-empty string of at most {self.max_length} characters", field=self.name
            )
        problem = id_problem(value) if self.type is FieldType.ID else name_problem(value)
        if problem is not None:
            raise InvalidRecord(f"{self.name} {problem}", field=self.name)
        if self.choices is not None and value.strip() not in self.choices.__members__.values():
            allowed = ", ".join(choice.value for choice in self.choices)
            raise InvalidRecord(f"{self.name} must be one of {allowed}", field=self.name)
        return value.strip()


def _name(name: str, description: str, **options: Any) -> RecordField:
    """A short text field: a category, a mode, a trade."""
    return RecordField(name, FieldType.TEXT, description, max_length=64, **options)


_OCCURRED_AT = RecordField("occurred_at", FieldType.INSTANT, "When the action happened")

#: Every record's fields, then each kind's own: the one description of a partner record.
COMMON_FIELDS = (
    RecordField("external_id", FieldType.ID, "The partner's id of the record (idempotency key)"),
    RecordField("account_ref", FieldType.ID, "The partner account the resident linked"),
    _name("kind", "Optional; must be the partner's kind", required=False, choices=PartnerKind),
)
RECORD_FIELDS: dict[ActionKind, tuple[RecordField, ...]] = {
    ActionKind.TRANSIT: (
        _name("mode", "How the resident travelled", choices=TransitMode),
        RecordField("started_at", FieldType.INSTANT, "When the trip started"),
        RecordField("ended_at", FieldType.INSTANT, "When the trip ended (the action's time)"),
        RecordField("distance_m", FieldType.INTEGER, "Distance travelled in metres, as the partner computes it"),
    ),
    ActionKind.RECYCLING: (
        RecordField("station_id", FieldType.ID, "The sorting station"),
        _OCCURRED_AT,
        _name("material", "What was dropped off, named as in the methodology's factors"),
        RecordField("weight_g", FieldType.INTEGER, "Weight in grams measured by the station; 0 is refused"),
    ),
    ActionKind.SECOND_HAND: (
        _OCCURRED_AT,
        _name("category", "What was traded, named as in the methodology's factors"),
        _name("trade", "Which side of the trade the resident was on", choices=SecondHandTrade),
        RecordField(
            "trade_ref",
            FieldType.ID,
            "The platform's id of the trade, the same on both sides' records (required from methodology version 2)",
            required=False,
        ),
        RecordField("quantity", FieldType.INTEGER, "Number of items", minimum=1),
        RecordField("weight_g", FieldType.INTEGER, "Weight in grams, if known", required=False, minimum=1),
    ),
}


def storable(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` (decoded JSON) can be kept as sent: the service stores every decided record verbatim."""
    if isinstance(value, str):
        return _UNSTORABLE_CHARACTERS.search(value) is None
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict | list) and depth >= MAX_RECORD_DEPTH:
        return False
    if isinstance(value, dict):
        return all(storable(k, depth + 1) and storable(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return all(storable(item, depth + 1) for item in value)
    return True


def parse_record(kind: ActionKind, raw: Any) -> ActionRecord:
    """Validate one record of a partner of ``kind`` (``COMMON_FIELDS`` and ``RECORD_FIELDS[kind]``).

    Raises ``InvalidRecord`` naming the first bad field, or the first field the format does not define;
    ``kind``, if present, must be the partner's kind.
    """
    if not isinstance(raw, dict):
        raise InvalidRecord("a record must be a JSON object")
    if not storable(raw):
        raise InvalidRecord(
            "the record holds what cannot be stored: a NUL character, an unpaired surrogate, a non-finite "
            f"number, or nesting deeper than {MAX_RECORD_DEPTH} levels"
        )
    specs = (*COMMON_FIELDS, *RECORD_FIELDS[kind])
    values = {spec.name: spec.read(raw) for spec in specs}
    unknown = sorted(set(raw) - {spec.name for spec in specs})
    if unknown:
        # Only what the methodology defines is decided and kept: anything else is refused, not stored.
        shown = ", ".join(repr(name[:40]) for name in unknown[:5])
        raise InvalidRecord(
            f"unknown field {shown}: a {kind.value} record has only its documented fields", field=unknown[0][:64]
        )
    if values["kind"] is not None and values["kind"] != kind.value:
        raise InvalidRecord(f"this partner reports {kind.value} records, not {values['kind']!r}", field="kind")
    common = (values["external_id"], values["account_ref"], kind)
    if kind is ActionKind.TRANSIT:
        return ActionRecord(
            *common, values["mode"], values["distance_m"], values["ended_at"], started_at=values["started_at"]
        )
    if kind is ActionKind.RECYCLING:
        details = {"station_id": values["station_id"]}
        return ActionRecord(*common, values["material"], values["weight_g"], values["occurred_at"], details=details)
    details = {"trade": values["trade"]}
    for optional in ("trade_ref", "weight_g"):
        if values[optional] is not None:
            details[optional] = values[optional]
    return ActionRecord(*common, values["category"], values["quantity"], values["occurred_at"], details=details)


@dataclass(frozen=True)
class Assessment:
    """A record judged on its own and against the resident's earlier trips (caps come later)."""

    reduction: Reduction | None
    reason: str | None

    @property
    def accepted(self) -> bool:
        return self.reduction is not None


def assess(
    record: ActionRecord,
    methodologies: MethodologyRegistry,
    now: datetime,
    earlier_trips: TripHistory | Iterable[Trip],
    local_offset: timedelta,
) -> Assessment:
    """Plausibility, the one-body and cross-partner rules, then the methodology in force when the activity
    happened (its local day: a trip's start day), which may require details of the record."""
    refusal: Refusal | None
    if record.kind is ActionKind.TRANSIT:
        trip = record.trip()
        refusal = check_trip(trip, now) or check_against_earlier(trip, earlier_trips)
    elif record.kind is ActionKind.RECYCLING:
        refusal = check_drop_off(record.quantity, record.occurred_at, now)
    else:
        refusal = check_time(record.occurred_at, now)
    if refusal is not None:
        return Assessment(None, refusal.value)
    try:
        methodology = methodologies.current(record.kind.value, local_day(record.activity_at, local_offset))
        if any(record.details.get(name) is None for name in methodology.required_details):
            return Assessment(None, Reason.INVALID_RECORD.value)
        reduction = methodology.reduction(record.category, record.quantity)
    except MethodologyNotFound:
        return Assessment(None, Reason.NO_METHODOLOGY.value)
    except NotCreditable as exc:
        return Assessment(None, str(exc.extra["reason"]))
    except InvalidInput:
        return Assessment(None, Reason.UNKNOWN_CATEGORY.value)
    if reduction.grams_co2e <= 0:
        return Assessment(None, Reason.NO_REDUCTION.value)
    return Assessment(reduction, None)


def local_day(instant: datetime, offset: timedelta) -> date:
    """The calendar day of ``instant`` in the programme's time zone (caps and statements use it)."""
    return instant.astimezone(timezone(offset)).date()


def month_start(day: date) -> date:
    return day.replace(day=1)
