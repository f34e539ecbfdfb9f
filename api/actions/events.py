"""The events a partner hears of about the actions it reported, written to the outbox with each decision.

Only what a partner subscribed to is built and written (``Outbox.wants``): a batch of a thousand
records costs one query when its partner has no endpoint.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

from api.actions.models import Action
from api.webhooks import EventType, Outbox, event
from domain.actions import ActionStatus
from domain.decision import NewAction

_DECIDED = {ActionStatus.CREDITED: EventType.ACTION_CREDITED, ActionStatus.REJECTED: EventType.ACTION_REJECTED}


async def decided(conn: asyncpg.Connection, partner_id: uuid.UUID, actions: Sequence[NewAction]) -> None:
    """``action.credited`` or ``action.rejected`` for each new action (one held for review waits for its review)."""
    outbox = await Outbox.of(conn, "partner", partner_id)
    wanted = [a for a in actions if a.status in _DECIDED and outbox.wants(_DECIDED[a.status])]
    if wanted:
        await outbox.emit([event(_DECIDED[a.status], a.id, _decided_data(a)) for a in wanted])


def _decided_data(a: NewAction) -> dict[str, Any]:
    credited = a.status is ActionStatus.CREDITED and a.reduction is not None
    return {
        "action_id": a.id,
        "external_id": a.record.external_id,
        "status": a.status.value,
        "reason": a.reason,
        "grams_co2e": a.reduction.grams_co2e if credited and a.reduction else 0,
        "points": a.points,
        "points_withheld": a.points_withheld,
        "methodology_id": a.reduction.methodology_id if a.reduction else None,
        "methodology_version": a.reduction.methodology_version if a.reduction else None,
    }


async def reviewed(conn: asyncpg.Connection, action: Action, decision: str) -> None:
    """``action.reviewed``: an operator approved (and so credited) or rejected a held action."""
    outbox = await Outbox.of(conn, "partner", action.partner_id)
    if outbox.wants(EventType.ACTION_REVIEWED):
        data = {
            "action_id": action.id,
            "external_id": action.external_id,
            "decision": decision,
            "status": action.status,
            "reason": action.reason,
            "grams_co2e": action.grams_co2e if action.status == ActionStatus.CREDITED else 0,
            "points": action.points,
            "points_withheld": action.points_withheld,
        }
        await outbox.emit([event(EventType.ACTION_REVIEWED, action.id, data)])
