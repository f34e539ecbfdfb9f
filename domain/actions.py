"""Low-carbon actions: the records partners report, and how one is judged before it is credited.

A record is parsed from the partner's JSON into an ``ActionRecord`` (or refused with a reason
code), then ``assess`` applies the anti-fraud rules and the methodology valid on the day the
action happened. What depends on stored state (earlier trips, caps, a partner's usual volume) is
passed in, so that pushes, claims and operator reviews all decide the same way.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from enum import StrEnum
from typing import Any

from domain.errors import InvalidInput
from domain.fraud import (
    Refusal,
    TransitMode,
    Trip,
    check_against_earlier,
    check_drop_off,
    check_time,
    check_trip,
)
from domain.identity import PartnerKind
from domain.methodologies import MethodologyNotFound, MethodologyRegistry, NotCreditable, Reduction

ActionKind = PartnerKind

#: Namespace of action ids: uuid5 of "<partner id>:<external id>", so a record has one id however it arrives.
ACTION_NAMESPACE = uuid.UUID("6f1c1a52-0d7e-4f0a-9a55-3c6c0a4e5b11")
MAX_EXTERNAL_ID = 128
MAX_BATCH = 1000


class ActionStatus(StrEnum):
    CREDITED = "credited"
    REJECTED = "rejected"
    PENDING_REVIEW = "pending_review"


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


class SecondHandTrade(StrEnum):
    SOLD = "sold"
    BOUGHT = "bought"
    DONATED = "donated"


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

    def trip(self) -> Trip:
        assert self.started_at is not None
        return Trip(TransitMode(self.category), self.started_at, self.occurred_at, self.quantity)


def _text(raw: dict[str, Any], name: str, max_length: int = MAX_EXTERNAL_ID) -> str:
    value = raw.get(name)
    if not isinstance(value, str) or not value.strip() or len(value) > max_length:
        raise InvalidRecord(f"{name} must be a non-empty string of at most {max_length} characters", field=name)
    return value.strip()


def _integer(raw: dict[str, Any], name: str, minimum: int = 0, required: bool = True) -> int | None:
    value = raw.get(name)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidRecord(f"{name} must be an integer ≥ {minimum}", field=name)
    return value


def _instant(raw: dict[str, Any], name: str) -> datetime:
    value = raw.get(name)
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise InvalidRecord(f"{name} must be an ISO 8601 time with a UTC offset", field=name)
    return parsed.astimezone(UTC)


def _choice(raw: dict[str, Any], name: str, allowed: type[StrEnum] | None = None) -> str:
    value = _text(raw, name, 64)
    if allowed is not None and value not in allowed.__members__.values():
        choices = ", ".join(m.value for m in allowed)
        raise InvalidRecord(f"{name} must be one of {choices}", field=name)
    return value


def parse_record(kind: ActionKind, raw: Any) -> ActionRecord:
    """Validate one record of a partner of ``kind``; raises ``InvalidRecord`` naming the bad field.

    Transit: ``mode``, ``started_at``, ``ended_at``, ``distance_m``. Recycling: ``station_id``,
    ``occurred_at``, ``material``, ``weight_g``. Second-hand: ``occurred_at``, ``category``,
    ``trade`` (sold, bought, donated), ``quantity`` and optionally ``weight_g``. All: ``external_id``
    and ``account_ref``; ``kind``, if present, must be the partner's kind.
    """
    if not isinstance(raw, dict):
        raise InvalidRecord("a record must be a JSON object")
    external_id = _text(raw, "external_id")
    account_ref = _text(raw, "account_ref")
    declared = raw.get("kind")
    if declared is not None and declared != kind.value:
        raise InvalidRecord(f"this partner reports {kind.value} records, not {declared!r}", field="kind")
    if kind is ActionKind.TRANSIT:
        mode = _choice(raw, "mode", TransitMode)
        return ActionRecord(
            external_id,
            account_ref,
            kind,
            mode,
            _integer(raw, "distance_m") or 0,
            _instant(raw, "ended_at"),
            started_at=_instant(raw, "started_at"),
        )
    if kind is ActionKind.RECYCLING:
        weight = _integer(raw, "weight_g") or 0
        return ActionRecord(
            external_id,
            account_ref,
            kind,
            _choice(raw, "material"),
            weight,
            _instant(raw, "occurred_at"),
            details={"station_id": _text(raw, "station_id")},
        )
    details: dict[str, Any] = {"trade": _choice(raw, "trade", SecondHandTrade)}
    weight = _integer(raw, "weight_g", minimum=1, required=False)
    if weight is not None:
        details["weight_g"] = weight
    return ActionRecord(
        external_id,
        account_ref,
        kind,
        _choice(raw, "category"),
        _integer(raw, "quantity", minimum=1) or 0,
        _instant(raw, "occurred_at"),
        details=details,
    )


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
    earlier_trips: list[Trip],
    local_offset: timedelta,
) -> Assessment:
    """Plausibility, the one-body and cross-partner rules, then the methodology of the action's day."""
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
        methodology = methodologies.current(record.kind.value, local_day(record.occurred_at, local_offset))
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


def anomaly_threshold(past_records: int, past_hours: int, *, factor: int, floor: int) -> int:
    """Most records a partner may send in one hour before the rest go to review.

    ``factor`` times its mean hourly volume over the hours it has been sending (up to a week), and
    never less than ``floor``, so a new or quiet partner is not flagged for ordinary traffic.
    """
    if past_hours <= 0:
        return floor
    return max(floor, factor * past_records // past_hours)
