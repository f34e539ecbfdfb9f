"""The events merchants and partners can subscribe to, and how an event gets its stable id."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from domain.identity import Role

#: Namespace of event ids: uuid5 of "<type>:<subject id>". A change is reported by one event,
#: however often the transaction that writes it is retried.
EVENT_NAMESPACE = uuid.UUID("8d3c2a71-4f6e-4b5a-9e0d-1c7b2e9f4a63")


class EventType(StrEnum):
    REDEMPTION_HELD = "redemption.held"
    REDEMPTION_CAPTURED = "redemption.captured"
    REDEMPTION_VOIDED = "redemption.voided"
    REDEMPTION_EXPIRED = "redemption.expired"
    REDEMPTION_REFUNDED = "redemption.refunded"
    ACTION_CREDITED = "action.credited"
    ACTION_REJECTED = "action.rejected"
    ACTION_REVIEWED = "action.reviewed"


#: Which events each kind of client may subscribe to: merchants hear of their redemptions, partners
#: of the actions they reported.
EVENTS_BY_ROLE: dict[Role, frozenset[EventType]] = {
    Role.MERCHANT: frozenset(e for e in EventType if e.value.startswith("redemption.")),
    Role.PARTNER: frozenset(e for e in EventType if e.value.startswith("action.")),
}


@dataclass(frozen=True, slots=True)
class Event:
    id: uuid.UUID
    type: EventType
    data: dict[str, Any]


def event(type: EventType, subject_id: uuid.UUID, data: dict[str, Any]) -> Event:
    """The event ``type`` about ``subject_id`` (a redemption, an action), with ``data`` as its body."""
    return Event(uuid.uuid5(EVENT_NAMESPACE, f"{type.value}:{subject_id}"), type, data)
