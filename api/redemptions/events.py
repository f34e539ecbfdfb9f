"""The events a redemption's merchant hears of, written to the outbox with each change."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import asyncpg

from api.redemptions.models import Redemption
from api.webhooks import EventType, Outbox, event


def _data(r: Redemption) -> dict[str, Any]:
    return {
        "redemption_id": r.id,
        "offer_id": r.offer_id,
        "status": r.status,
        "points": r.points,
        "created_at": r.created_at,
        "expires_at": r.expires_at,
        "captured_at": r.captured_at,
        "voided_at": r.voided_at,
        "voided_by": r.voided_by,
        "expired_at": r.expired_at,
        "refunded_at": r.refunded_at,
        "refund_reason": r.refund_reason,
    }


async def emit(conn: asyncpg.Connection, type: EventType, redemptions: Sequence[Redemption]) -> None:
    """Write ``type`` about each redemption to its merchant's outbox (if the merchant subscribed)."""
    by_merchant: defaultdict[Any, list[Redemption]] = defaultdict(list)
    for r in redemptions:
        by_merchant[r.merchant_id].append(r)
    for merchant_id, theirs in by_merchant.items():
        outbox = await Outbox.of(conn, "merchant", merchant_id)
        if outbox.wants(type):
            await outbox.emit([event(type, r.id, _data(r)) for r in theirs])
