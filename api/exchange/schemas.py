"""Request and response bodies of the exchange routes."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any
from uuid import UUID

from msgspec import Struct

from api.exchange.models import ExchangeBatch


class CreateBatch(Struct, forbid_unknown_fields=True):
    #: Reductions credited, and reversals written, up to this moment join the batch (omitted or later: now).
    cutoff: datetime | None = None


class BatchOut(Struct):
    id: UUID
    cutoff: datetime
    #: ``built`` (waiting for, or retrying, submission), ``submitted`` (receipt recorded) or ``rejected``.
    status: str
    actions: int
    grams_co2e: int
    adjustments: int
    adjustment_g: int
    net_g: int
    by_kind: dict[str, Any]
    by_methodology: dict[str, Any]
    #: RFC 9162 Merkle root over the batch's action ids in ascending order (base64).
    merkle_root: str
    created_by: str
    created_at: datetime
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    submitted_at: datetime | None
    receipt_id: str | None
    evidence_url: str

    @classmethod
    def of(cls, b: ExchangeBatch) -> BatchOut:
        return cls(
            b.id,
            b.cutoff,
            b.status,
            b.actions,
            b.grams_co2e,
            b.adjustments,
            b.adjustment_g,
            b.net_g,
            b.by_kind,
            b.by_methodology,
            base64.b64encode(b.merkle_root).decode(),
            b.created_by,
            b.created_at,
            b.attempts,
            b.next_attempt_at if b.status == "built" else None,
            b.last_error,
            b.submitted_at,
            b.receipt_id,
            f"/v1/operator/exchange-batches/{b.id}/evidence",
        )


class BatchPage(Struct):
    items: list[BatchOut]
    next_cursor: str | None
